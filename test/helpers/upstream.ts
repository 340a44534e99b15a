import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';

/** A request as the upstream saw it. */
export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: Buffer;
}

/** What a scripted upstream answers instead of its default JSON. */
export interface UpstreamReply {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Answer after this many milliseconds (holds the request at the gate meanwhile). */
  delayMs?: number;
  /** Answer once this settles (holds the request until the test lets it go). */
  hold?: Promise<unknown>;
}

/** A real HTTP upstream that records what reaches it and answers with JSON. */
export interface RecordingUpstream {
  url: string;
  seen: SeenRequest[];
  /** Per-request delay before answering, for timeout and drain tests. */
  delayMs: number;
  /** Scripts the answer to a request (`n` counts from 1); undefined keeps the default. */
  reply?: (seen: SeenRequest, n: number) => UpstreamReply | undefined;
  server: Server;
  close(): Promise<void>;
}

/** Starts the recording upstream on a random loopback port. */
export async function startUpstream(): Promise<RecordingUpstream> {
  const up: RecordingUpstream = {
    url: '',
    seen: [],
    delayMs: 0,
    server: createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        const seen = { method: req.method ?? '', url: req.url ?? '', headers: req.headers, body: Buffer.concat(chunks) };
        up.seen.push(seen);
        const scripted = up.reply?.(seen, up.seen.length);
        const answer = scripted
          ? () => res.writeHead(scripted.status, scripted.headers ?? {}).end(scripted.body ?? '')
          : () =>
              res.writeHead(200, { 'content-type': 'application/json', 'x-upstream': 'yes' }).end(
                JSON.stringify({ method: seen.method, url: seen.url, agent_id: req.headers['x-agent-id'] ?? null, body_bytes: seen.body.length }),
              );
        const delayMs = scripted?.delayMs ?? up.delayMs;
        if (scripted?.hold) void scripted.hold.finally(answer);
        else if (delayMs > 0) setTimeout(answer, delayMs);
        else answer();
      });
    }),
    close: async () => {
      up.server.closeAllConnections();
      await new Promise<void>((r) => up.server.close(() => r()));
    },
  };
  await new Promise<void>((r) => up.server.listen(0, '127.0.0.1', r));
  const a = up.server.address();
  up.url = `http://127.0.0.1:${typeof a === 'object' && a ? a.port : 0}`;
  return up;
}
