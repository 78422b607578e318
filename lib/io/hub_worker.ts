/**
 * Child process behind snapshotDownloadSync (lib/io/hub_sync.ts): reads {repo, opts} as JSON on stdin, downloads
 * with snapshotDownload and prints {"dir": …} or {"error": …} as its last stdout line. Progress goes to stderr.
 */
import { snapshotDownload } from './hub.ts';

let input = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (d) => (input += d));
process.stdin.on('end', () => {
  const { repo, opts } = JSON.parse(input) as { repo: string; opts: Record<string, unknown> };
  snapshotDownload(repo, opts).then(
    (dir) => process.stdout.write(JSON.stringify({ dir }) + '\n'),
    (e: Error) => {
      process.stdout.write(JSON.stringify({ error: e.message }) + '\n');
      process.exitCode = 1;
    },
  );
});
