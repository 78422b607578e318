/**
 * Fine-tuned checkpoints of transformers' task classes (BertForSequenceClassification, GPT2ForTokenClassification, …)
 * loaded into a flex-head model: their head becomes the active flex head `default`, as the Python library's
 * PredictionHeadLoader.convert_static_to_flex_head does (head_utils.STATIC_TO_FLEX_HEAD_MAP). Each entry gives the flex
 * head config and, per flex-head module index, the static module it takes its weights from (null: a module without
 * weights, e.g. dropout or an activation).
 * Covered: the classification, tagging, question-answering, multiple-choice and image-classification classes of the
 * architectures here; LM classes (…ForMaskedLM, …LMHeadModel, …ForConditionalGeneration) keep the model's own LM head.
 */
import type { HeadConfig } from './heads.ts';

interface StaticHead { config: Partial<HeadConfig> & { head_type: HeadConfig['head_type'] }; layers: (string | null)[] }

const one = (head_type: HeadConfig['head_type'], module: string, extra: Partial<HeadConfig> = {}): StaticHead =>
  ({ config: { head_type, layers: 1, activation_function: null, ...extra }, layers: [null, module] });
const two = (head_type: HeadConfig['head_type'], act: string, dense: string, out: string, extra: Partial<HeadConfig> = {}): StaticHead =>
  ({ config: { head_type, layers: 2, activation_function: act, ...extra }, layers: [null, dense, null, null, out] });

const STATIC_HEADS: Record<string, StaticHead> = {};
for (const p of ['Bert', 'Roberta', 'XLMRoberta', 'Electra', 'DistilBert', 'GPT2']) {
  STATIC_HEADS[`${p}ForTokenClassification`] = one('tagging', 'classifier');
  STATIC_HEADS[`${p}ForQuestionAnswering`] = one('question_answering', 'qa_outputs');
}
Object.assign(STATIC_HEADS, {
  BertForSequenceClassification: one('classification', 'classifier', { use_pooler: true }),
  BertForMultipleChoice: one('multiple_choice', 'classifier', { use_pooler: true }),
  RobertaForSequenceClassification: two('classification', 'tanh', 'classifier.dense', 'classifier.out_proj', { use_pooler: false }),
  RobertaForMultipleChoice: one('multiple_choice', 'classifier', { use_pooler: true }),
  XLMRobertaForSequenceClassification: two('classification', 'tanh', 'classifier.dense', 'classifier.out_proj', { use_pooler: false }),
  XLMRobertaForMultipleChoice: one('multiple_choice', 'classifier', { use_pooler: true }),
  ElectraForSequenceClassification: two('classification', 'gelu', 'classifier.dense', 'classifier.out_proj', { bias: true }),
  ElectraForMultipleChoice: two('multiple_choice', 'gelu', 'sequence_summary.summary', 'classifier', { use_pooler: false }),
  DistilBertForSequenceClassification: two('classification', 'relu', 'pre_classifier', 'classifier'),
  DistilBertForMultipleChoice: two('multiple_choice', 'relu', 'pre_classifier', 'classifier'),
  GPT2ForSequenceClassification: one('classification', 'score', { bias: false }),
  LlamaForSequenceClassification: one('classification', 'score', { dropout_prob: 0, bias: false }),
  LlamaForQuestionAnswering: one('question_answering', 'qa_outputs'),
  LlamaForTokenClassification: one('tagging', 'score'),
  MistralForSequenceClassification: one('classification', 'score', { dropout_prob: 0, bias: false }),
  BartForSequenceClassification: two('classification', 'tanh', 'classification_head.dense', 'classification_head.out_proj'),
  BartForQuestionAnswering: one('question_answering', 'qa_outputs'),
  T5ForSequenceClassification: two('classification', 'tanh', 'classification_head.dense', 'classification_head.out_proj'),
  T5ForQuestionAnswering: one('question_answering', 'qa_outputs'),
  MT5ForSequenceClassification: two('classification', 'tanh', 'classification_head.dense', 'classification_head.out_proj'),
  MT5ForQuestionAnswering: one('question_answering', 'qa_outputs'),
  ViTForImageClassification: one('image_classification', 'classifier'),
});

/**
 * The flex head for a checkpoint of `config.architectures[0]`, with its labels (config.json's label2id / num_labels, as
 * get_head_config_and_rename_list), and the checkpoint-name → flex-name map of its weights; null for other classes.
 */
export function staticHeadFor(config: Record<string, unknown>, headName = 'default'): { config: HeadConfig; rename: Map<string, string> } | null {
  const arch = Array.isArray(config.architectures) ? String(config.architectures[0]) : '';
  const spec = STATIC_HEADS[arch];
  if (!spec) return null;
  let label2id = config.label2id as Record<string, number> | undefined;
  const id2label = config.id2label as Record<string, string> | undefined;
  if (!label2id && id2label) label2id = Object.fromEntries(Object.entries(id2label).map(([i, l]) => [l, Number(i)]));
  label2id ??= { LABEL_0: 0, LABEL_1: 1 };
  const n = typeof config.num_labels === 'number' ? config.num_labels : Object.keys(label2id).length;
  const cfg = { ...spec.config } as HeadConfig;
  if (cfg.head_type === 'multiple_choice') Object.assign(cfg, { num_choices: n, label2id });
  else Object.assign(cfg, { num_labels: n, label2id });
  const rename = new Map<string, string>();
  spec.layers.forEach((m, i) => {
    if (m) for (const p of ['weight', 'bias']) rename.set(`${m}.${p}`, `heads.${headName}.${i}.${p}`);
  });
  return { config: cfg, rename };
}
