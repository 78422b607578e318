"""Fixture for the config_id the Python library's save_all_adapters writes (utils.get_adapter_config_hash): for every
adapter_config.json in ../shared/reference, the sha1 (first 16 hex digits) of json.dumps(sort_keys=True) of the config
with falsy values dropped (dicts recursively) and the v3 keys at their v2 defaults removed.
Run: /usr/bin/python3 test/reference/gen_config_hash.py /work/shared"""
import glob, hashlib, json, os, sys

SHARED = sys.argv[1] if len(sys.argv) > 1 else '../shared'
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
V2_DEFAULTS = {'phm_layer': True, 'phm_dim': 4, 'factorized_phm_W': True, 'shared_W_phm': False, 'shared_phm_rule': True,
               'factorized_phm_rule': False, 'phm_c_init': 'normal', 'phm_init_range': 0.0001, 'learn_phm': True,
               'hypercomplex_nonlinearity': 'glorot-uniform', 'phm_rank': 1, 'phm_bias': True, 'init_weights': 'bert', 'scaling': 1.0}


def drop_falsy(d):
    return {k: drop_falsy(v) for k, v in d.items() if v} if isinstance(d, dict) else d


def config_hash(cfg):
    m = drop_falsy(dict(cfg))
    for k, d in V2_DEFAULTS.items():
        if k in m and m[k] == d:
            del m[k]
    return hashlib.sha1(json.dumps(m, sort_keys=True).encode('utf-8')).hexdigest()[:16]


out = {}
for f in sorted(glob.glob(os.path.join(SHARED, 'reference', '*', '*', '*', 'adapter_config.json'))):
    case = os.path.relpath(f, os.path.join(SHARED, 'reference'))
    out[case] = {'config': json.load(open(f))['config'], 'hash': config_hash(json.load(open(f))['config'])}
dst = os.path.join(ROOT, 'test', 'fixtures', 'config_hash.json')
json.dump(out, open(dst, 'w'), indent=1, sort_keys=True)
print(f'{len(out)} configs -> {dst}')
