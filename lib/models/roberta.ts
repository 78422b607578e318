/**
 * RoBERTa (https://arxiv.org/abs/1907.11692) and XLM-RoBERTa (https://arxiv.org/abs/1911.02116), as HF
 * transformers' RobertaModel / XLMRobertaModel (models/roberta/modeling_roberta.py). Both are BERT with a
 * different position-id rule, so they reuse BertModel: positions count the non-pad tokens and start at
 * pad_token_id + 1 (`create_position_ids_from_input_ids`), padded positions get pad_token_id itself.
 * Weight names are BERT's; the Python library's RobertaAdapterModel and XLMRobertaAdapterModel both keep
 * the base model under the `roberta.` prefix.
 */
import type { HFConfig } from './common.ts';
import { BertModel, parseBertConfig } from './bert.ts';

/** The RoBERTa / XLM-R encoder: BERT layers, RoBERTa position ids, tanh pooler on <s>. */
export function buildRoberta(cfg: HFConfig): BertModel {
  return new BertModel(parseBertConfig(cfg, 'roberta'));
}
