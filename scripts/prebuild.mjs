// prebuild.mjs — `npm run prebuild`: a Node-API prebuild of the CPU addon into prebuilds/<platform>-<arch>/
// with prebuildify. N-API builds work on every Node version, so the build targets the running Node (whose
// headers are installed locally) instead of downloading the newest release's headers.
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const bin = path.join(path.dirname(require.resolve('prebuildify/package.json')), 'bin.js');
const r = spawnSync(process.execPath, [bin, '--napi', '--strip', '-t', process.versions.node], { cwd: root, stdio: 'inherit' });
process.exit(r.status ?? 1);
