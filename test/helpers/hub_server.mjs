// A local server that answers like the Hugging Face Hub's endpoints, for the Hub tests (test/io/hub.test.ts):
//   GET /api/models/<repo>/revision/<rev>   {sha, siblings}
//   GET /<repo>/resolve/<rev>/<file>        the file with a git-sha1 ETag; *.safetensors redirect to /lfs/… with
//                                           X-Linked-Etag (sha256) and X-Linked-Size, like LFS files
//   GET /lfs/<repo>/<file>                  the LFS content, with Range support
// Options: failFirstLfs (cut the first LFS response halfway), corrupt (flip a byte), token (require Bearer).
// Run as a script (`node test/helpers/hub_server.mjs '{"repos": {...}}'`) it prints its URL and serves until killed,
// so a synchronous download in the test process can reach it.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

export const COMMITS = { main: 'a'.repeat(40), v1: 'b'.repeat(40) };
const gitSha1 = (b) => crypto.createHash('sha1').update(`blob ${b.length}\0`).update(b).digest('hex');
const sha256 = (b) => crypto.createHash('sha256').update(b).digest('hex');

/** Starts the server; repos maps 'org/name' to a folder. Resolves {url, log, close()}. */
export function serve(repos, opts = {}) {
  const log = { paths: [], ranges: [], auth: [] };
  let failed = false;
  const server = http.createServer((req, res) => {
    const u = decodeURIComponent(req.url);
    log.paths.push(u);
    log.auth.push(req.headers.authorization);
    if (opts.token && req.headers.authorization !== `Bearer ${opts.token}` && !u.startsWith('/lfs/')) { res.writeHead(401); return res.end(); }
    let m = /^\/api\/models\/(.+?)\/revision\/(\w+)$/.exec(u);
    if (m) {
      const dir = repos[m[1]];
      if (!dir || !(m[2] in COMMITS)) { res.writeHead(404); return res.end(); }
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ sha: COMMITS[m[2]], siblings: fs.readdirSync(dir).map((f) => ({ rfilename: f })) }));
    }
    m = /^\/(.+?)\/resolve\/(\w+)\/(.+)$/.exec(u);
    if (m) {
      const dir = repos[m[1]];
      const f = dir && path.join(dir, m[3]);
      if (!f || !fs.existsSync(f)) { res.writeHead(404); return res.end(); }
      const body = fs.readFileSync(f);
      if (f.endsWith('.safetensors')) {
        res.writeHead(302, { location: `/lfs/${m[1].replace('/', '_')}/${m[3]}`, 'x-linked-etag': `"${sha256(body)}"`, 'x-linked-size': String(body.length) });
        return res.end();
      }
      res.writeHead(200, { etag: `"${gitSha1(body)}"`, 'content-length': String(body.length) });
      return res.end(body);
    }
    m = /^\/lfs\/([^/]+)\/(.+)$/.exec(u);
    if (m) {
      let body = fs.readFileSync(path.join(repos[m[1].replace('_', '/')], m[2]));
      if (opts.corrupt) body = Buffer.from(body.map((b, i) => (i === 100 ? b ^ 1 : b)));
      const range = req.headers.range;
      log.ranges.push(range ?? '');
      const start = range ? Number(/bytes=(\d+)-/.exec(range)[1]) : 0;
      res.writeHead(range ? 206 : 200, { 'content-length': String(body.length - start) });
      if (opts.failFirstLfs && !failed) {
        failed = true;
        res.write(body.subarray(start, start + Math.floor((body.length - start) / 2)));
        return setTimeout(() => res.destroy(), 20);
      }
      return res.end(body.subarray(start));
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const url = `http://127.0.0.1:${server.address().port}`;
    resolve({ url, log, close: () => new Promise((r) => { server.closeAllConnections(); server.close(() => r()); }) });
  }));
}

if (process.argv[1] && import.meta.url.endsWith(path.basename(process.argv[1]))) {
  const { repos, opts } = JSON.parse(process.argv[2]);
  serve(repos, opts).then((s) => console.log(s.url));
}
