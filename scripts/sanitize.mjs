// sanitize.mjs — `npm run test:sanitize`: builds the addon with AddressSanitizer + UndefinedBehaviorSanitizer
// into build-sanitize/ and runs the whole test suite against it (node itself is not instrumented, so the
// ASan runtime is preloaded; leak detection is off because V8 keeps memory until exit by design).
import { spawnSync, execSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const cmakeJs = path.join(root, 'node_modules', 'cmake-js', 'bin', 'cmake-js');
const run = (cmd, args, env = {}) => {
  console.log(`> ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: root, stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) process.exit(r.status ?? 1);
};

run(process.execPath, [cmakeJs, 'compile', '--out', 'build-sanitize', '--parallel', '2', '--CDAD_SANITIZE=ON',
  '--CDWITH_CUDA=OFF', '--CDCMAKE_BUILD_TYPE=RelWithDebInfo']);
const asan = execSync('gcc -print-file-name=libasan.so').toString().trim();
const ubsan = execSync('gcc -print-file-name=libubsan.so').toString().trim();
run('npx', ['ava', '--serial', ...process.argv.slice(2)], {
  LD_PRELOAD: `${asan} ${ubsan}`,
  ASAN_OPTIONS: 'detect_leaks=0:abort_on_error=1:allocator_may_return_null=1',
  UBSAN_OPTIONS: 'halt_on_error=1:print_stacktrace=1',
  ADAPTERS_ADDON: path.join(root, 'build-sanitize', 'Release', 'adapters_node.node'),
  ADAPTERS_SANITIZED: '1',
});
console.log('sanitizer run clean');
