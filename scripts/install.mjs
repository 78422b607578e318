// install.mjs — `npm install` entry: use a prebuild when one matches this platform, otherwise build the
// addon with cmake-js (CPU kernels, plus the CUDA library when nvcc is found), and fall back to node-gyp
// (CPU only) if CMake is unavailable. Prints the build time.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import os from 'node:os';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

function prebuildLoads() {
  if (process.env.ADAPTERS_FORCE_BUILD) return false;
  try {
    const load = require('node-gyp-build');
    const p = load.resolve(root);
    return p.includes(`${path.sep}prebuilds${path.sep}`);
  } catch {
    return false;
  }
}

function run(cmd, args) {
  console.log(`> ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', shell: process.platform === 'win32' });
  return r.status === 0;
}

if (prebuildLoads()) {
  console.log('adapters-node: using the prebuilt addon');
  process.exit(0);
}
const t0 = Date.now();
const jobs = String(Math.max(1, os.availableParallelism?.() ?? os.cpus().length));
const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const extra = [];
if (process.env.ADAPTERS_WITH_CUDA) extra.push(`--CDWITH_CUDA=${process.env.ADAPTERS_WITH_CUDA}`);
if (process.env.ADAPTERS_SANITIZE) extra.push('--CDAD_SANITIZE=ON', '--out', 'build-sanitize');
let ok = run(process.execPath, [cmakeJs, 'compile', '--parallel', jobs, '--CDCMAKE_BUILD_TYPE=Release', ...extra]);
if (!ok && !process.env.ADAPTERS_SANITIZE) {
  console.warn('adapters-node: cmake-js build failed, trying node-gyp (CPU only)');
  const gyp = process.env.npm_config_node_gyp;  // npm's bundled node-gyp, set inside npm scripts
  ok = gyp ? run(process.execPath, [gyp, 'rebuild', '-j', jobs]) : run('npx', ['--yes', 'node-gyp', 'rebuild', '-j', jobs]);
}
if (!ok) {
  console.error('adapters-node: native build failed');
  process.exit(1);
}
console.log(`adapters-node: native build finished in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
