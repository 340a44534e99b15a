/**
 * `agent-gate nginx-config` (PROTOCOL.md section 12): writes DIR/nginx.conf, DIR/gate_sign.js
 * and the 0600 key copy DIR/gate_fwd_key.json for nginx in front of a gate in forwarded mode.
 * The written paths go to stdout, one per line; warnings and the command that runs nginx go to
 * stderr. Any error is one line on stderr and exit status 2.
 * @module
 */
import { dirname } from 'node:path';
import type { Command } from 'commander';
import { DEFAULT_PATH_PREFIX, parseMode, renderNginxConfig, type NginxConfigOptions } from '../nginx/index.js';
import { EXIT_ERROR, OneLineCommand } from './command.js';
import { writeOut, writeErr, oneLine } from './output.js';

interface NginxFlags {
  listen: string;
  gateUrl: string;
  tlsCert: string;
  tlsKey: string;
  clientCa: string;
  hmacKeyFile: string;
  kid: string;
  dir: string;
  pathPrefix: string;
  gateCa?: string;
  gateTlsName?: string;
  tlsMinVersion?: string;
  maxConnectionsPerAddress?: string;
  mode?: string;
  upstreamUrl?: string;
  upstreamCa?: string;
  upstreamTlsName?: string;
  authzCacheS?: string;
  authzCacheZone?: string;
  authzCacheMaxSize?: string;
  rateProxyIdentity?: string;
  authzTimeoutS?: string;
  xff?: string;
  passHeaders?: string;
}

/** How the help of every option that only authorizer mode reads begins (also how they are found). */
const AUTHORIZER_ONLY = 'authorizer mode:';

function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./:=@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** Adds `nginx-config` to `program`. */
export function registerNginxCommands(program: Command): void {
  const cmd = new OneLineCommand('nginx-config')
    .copyInheritedSettings(program)
    // One line on errors: no help text after them.
    .showHelpAfterError(false)
    .description('write an nginx configuration (nginx.conf + njs signer + key copy) that fronts a gate in forwarded mode')
    .requiredOption('--listen <host:port>', 'address nginx listens on, e.g. 0.0.0.0:443 or [::]:443')
    .requiredOption('--gate-url <url>', 'the gate origin, e.g. https://gate.internal:8443 (http:// in dev only)')
    .requiredOption('--tls-cert <file>', "nginx's server certificate chain (PEM)")
    .requiredOption('--tls-key <file>', "nginx's server key (PEM)")
    .requiredOption('--client-ca <file>', 'CAs trusted to issue agent certificates (PEM; the gate\'s GATE_CLIENT_CA)')
    .requiredOption('--hmac-key-file <file>', 'file holding the base64 HMAC secret of --kid, as in GATE_FWD_HMAC_KEYS (>= 32 bytes)')
    .requiredOption('--kid <kid>', 'key id of that secret in GATE_FWD_HMAC_KEYS')
    .requiredOption('--dir <dir>', 'output directory (nginx prefix: logs and temp files go there too)')
    .option('--path-prefix <path>', "the gate's path prefix (GATE_PATH_PREFIX)", DEFAULT_PATH_PREFIX)
    .option('--gate-ca <file>', "CA bundle (PEM) that verifies the gate's certificate")
    .option('--gate-tls-name <name>', "DNS name the gate's certificate must carry (default: the --gate-url host)")
    .option('--tls-min-version <version>', 'minimum TLS version offered to agents: TLSv1.2 or TLSv1.3', 'TLSv1.2')
    .option('--max-connections-per-address <n>', "nginx limit_conn per client address (default: the gate's GATE_MAX_CONNECTIONS_PER_ADDRESS default)")
    .option('--mode <mode>', 'forwarded (nginx -> gate -> upstream) or authorizer (nginx -> upstream, the gate decides; PROTOCOL.md section 13)', 'forwarded')
    .option('--upstream-url <url>', `${AUTHORIZER_ONLY} the protected service origin (as GATE_UPSTREAM_URL, no path)`)
    .option('--upstream-ca <file>', `${AUTHORIZER_ONLY} CA bundle (PEM) that verifies the upstream's certificate`)
    .option('--upstream-tls-name <name>', `${AUTHORIZER_ONLY} DNS name the upstream's certificate must carry`)
    .option('--authz-cache-s <n>', `${AUTHORIZER_ONLY} decision cache on (as GATE_AUTHZ_CACHE_S, whose max-age sets the TTL) or 0 for none`, '2')
    .option('--authz-cache-zone <size>', `${AUTHORIZER_ONLY} shared key zone of the decision cache`, '10m')
    .option('--authz-cache-max-size <size>', `${AUTHORIZER_ONLY} disk bound of the decision cache`, '100m')
    .option('--rate-proxy-identity <N/S>', `${AUTHORIZER_ONLY} edge limit per client certificate (as GATE_RATE_PROXY_IDENTITY)`, '1000/1')
    .option('--authz-timeout-s <n>', `${AUTHORIZER_ONLY} seconds to wait for a decision before 503 gate_unavailable`, '5')
    .option('--xff <mode>', `${AUTHORIZER_ONLY} X-Forwarded-For replace or append (as GATE_PROXY_XFF)`, 'replace')
    .option('--pass-headers <names>', `${AUTHORIZER_ONLY} stripped headers passed anyway (as GATE_PROXY_PASS_HEADERS)`)
    .action(async (flags: NginxFlags, self: Command) => {
      try {
        const opts: NginxConfigOptions = {
          listen: flags.listen,
          gateUrl: flags.gateUrl,
          tlsCert: flags.tlsCert,
          tlsKey: flags.tlsKey,
          clientCa: flags.clientCa,
          hmacKeyFile: flags.hmacKeyFile,
          kid: flags.kid,
          dir: flags.dir,
          pathPrefix: flags.pathPrefix,
        };
        if (flags.gateCa !== undefined) opts.gateCa = flags.gateCa;
        if (flags.gateTlsName !== undefined) opts.gateTlsName = flags.gateTlsName;
        if (flags.tlsMinVersion !== undefined) opts.tlsMinVersion = flags.tlsMinVersion as NginxConfigOptions['tlsMinVersion'];
        // The renderer refuses a value that is not a whole number in range, naming the flag.
        if (flags.maxConnectionsPerAddress !== undefined) opts.maxConnectionsPerAddress = Number(flags.maxConnectionsPerAddress);
        // Judged first, so that a misspelt mode is named as such, not as a flag it does not take.
        if (flags.mode !== undefined) opts.mode = parseMode(flags.mode);
        if (opts.mode === 'authorizer') {
          // The renderer refuses values out of range, naming the flag.
          opts.authorizer = {
            upstreamUrl: flags.upstreamUrl ?? '',
            ...(flags.upstreamCa !== undefined ? { upstreamCa: flags.upstreamCa } : {}),
            ...(flags.upstreamTlsName !== undefined ? { upstreamTlsName: flags.upstreamTlsName } : {}),
            ...(flags.authzCacheS !== undefined ? { cacheS: Number(flags.authzCacheS) } : {}),
            ...(flags.authzCacheZone !== undefined ? { cacheZone: flags.authzCacheZone } : {}),
            ...(flags.authzCacheMaxSize !== undefined ? { cacheMaxSize: flags.authzCacheMaxSize } : {}),
            ...(flags.rateProxyIdentity !== undefined ? { rateProxyIdentity: flags.rateProxyIdentity } : {}),
            ...(flags.authzTimeoutS !== undefined ? { timeoutS: Number(flags.authzTimeoutS) } : {}),
            ...(flags.xff !== undefined ? { xff: flags.xff as 'replace' | 'append' } : {}),
            ...(flags.passHeaders !== undefined ? { passHeaders: flags.passHeaders.split(',').map((n) => n.trim()).filter(Boolean) } : {}),
          };
        } else {
          // A forwarded config would silently ignore them: the operator meant authorizer mode.
          const given = self.options.find((o) => o.description.startsWith(AUTHORIZER_ONLY) && self.getOptionValueSource(o.attributeName()) === 'cli');
          if (given) throw new TypeError(`${given.long ?? given.flags} is for --mode authorizer${given.long === '--upstream-url' ? ' (in forwarded mode the gate proxies, GATE_UPSTREAM_URL)' : ''}`);
        }
        const out = await renderNginxConfig(opts);
        writeOut(self, [out.confPath, out.jsPath, out.keyPath].join('\n') + '\n');
        for (const w of out.warnings) writeErr(self, `warning: ${w}\n`);
        const dir = dirname(out.confPath);
        writeErr(self, `run: nginx -p ${shellQuote(dir)} -c ${shellQuote(out.confPath)} -g ${shellQuote(`daemon off; pid ${dir}/nginx.pid;`)}\n`);
      } catch (err) {
        // commander's error() honours the program's exitOverride, so callers can test this path.
        self.error(`error: ${oneLine(err)}`, { exitCode: EXIT_ERROR, code: 'agent-gate.nginx.failed' });
      }
    });
  program.addCommand(cmd);
}
