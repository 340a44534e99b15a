import { createServer, type Server } from 'node:http';

/**
 * The demo upstream of `agent-gate dev`: answers every request with what the gate asserted
 * about the caller, so the printed command shows the whole flow worked.
 */
export async function startDemoUpstream(host = '127.0.0.1', port = 0): Promise<{ server: Server; url: string }> {
  const server = createServer((req, res) => {
    let bytes = 0;
    req.on('data', (c: Buffer) => (bytes += c.length));
    req.on('end', () => {
      const body = JSON.stringify({
        message: 'hello from the demo upstream, via agent-gate',
        method: req.method,
        path: req.url,
        agent_id: req.headers['x-agent-id'] ?? null,
        agent_thumbprint: req.headers['x-agent-thumbprint'] ?? null,
        token_id: req.headers['x-agent-token-id'] ?? null,
        body_bytes: bytes,
      });
      res.writeHead(200, { 'content-type': 'application/json' }).end(body + '\n');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, host, resolve));
  const a = server.address();
  const p = typeof a === 'object' && a ? a.port : port;
  return { server, url: `http://${host}:${p}` };
}
