/**
 * Fixed-window counters for the rate limits of section 12, run as one step: the counters a
 * request's step needs (its cooldown, then its limits, in the contract's order) are evaluated
 * in order in one store round trip, and the first refusal ends the step, so a refused counter
 * never spends the budget of the ones after it. Redis runs {@link STEP_LUA}; the memory store
 * and the gate's own fallback run {@link MemoryWindows}, with the same semantics.
 * @module
 */

/**
 * One counter of a step.
 * - `check`: reads only; refused while the counter is at `points` or more (a cooldown).
 * - `count`: adds one; refused when the new count exceeds `points`. The window of `windowMs`
 *   starts with the first count.
 * - `fail`: adds one; the count that reaches `points` holds the counter for `windowMs` from
 *   now (the cooldown starts with the failure that reached it) and reports the refusal. Later
 *   failures (proofs already in flight) count but neither extend the cooldown nor report it again.
 */
export interface WindowOp {
  kind: 'check' | 'count' | 'fail';
  key: string;
  points: number;
  windowMs: number;
}

/** What a step found: the index of the refused op (-1: none), its time left, each op's count. */
export interface StepOutcome {
  refused: number;
  msLeft: number;
  /** Counts after the step, one per op that ran (ops after a refusal did not run). */
  counts: number[];
}

/**
 * KEYS: the counters; ARGV: kind, points, window ms of each. Returns {refused (1-based, 0 for
 * none), ms left, count, count, ...}. PEXPIRE on the first count only (fixed window); a counter
 * found without an expiry (written by hand, restored) gets one, so no counter lives forever.
 */
export const STEP_LUA = `
local out = {0, 0}
for i = 1, #KEYS do
  local k = KEYS[i]
  local kind = ARGV[3 * i - 2]
  local points = tonumber(ARGV[3 * i - 1])
  local win = tonumber(ARGV[3 * i])
  if kind == 'check' then
    local v = tonumber(redis.call('GET', k) or '0')
    out[i + 2] = v
    if v >= points then
      local ttl = redis.call('PTTL', k)
      if ttl < 0 then
        redis.call('PEXPIRE', k, win)
        ttl = win
      end
      out[1] = i
      out[2] = ttl
      return out
    end
  else
    local v = redis.call('INCR', k)
    local ttl = win
    if v == 1 then
      redis.call('PEXPIRE', k, win)
    else
      ttl = redis.call('PTTL', k)
      if ttl < 0 then
        redis.call('PEXPIRE', k, win)
        ttl = win
      end
    end
    out[i + 2] = v
    if kind == 'fail' and v == points then
      redis.call('PEXPIRE', k, win)
      out[1] = i
      out[2] = win
      return out
    end
    if kind == 'count' and v > points then
      out[1] = i
      out[2] = ttl
      return out
    end
  end
end
return out
`;

/** Decodes {@link STEP_LUA}'s reply; `offset` is the index of the reply's first op in the step. */
export function stepReply(reply: number[], offset = 0): StepOutcome {
  const counts = reply.slice(2);
  return { refused: reply[0]! > 0 ? offset + reply[0]! - 1 : -1, msLeft: reply[1]!, counts };
}

/** Options of {@link MemoryWindows}. */
export interface MemoryWindowsOptions {
  /** Most counters held; expired ones are dropped first, then the oldest. */
  maxKeys: number;
  now?: () => number;
}

/** {@link STEP_LUA} in process memory, bounded. */
export class MemoryWindows {
  /** `held`: a running cooldown, evicted only when nothing else can be. */
  private readonly counters = new Map<string, { v: number; until: number; held?: boolean }>();
  private readonly now: () => number;
  private sweptAt = -Infinity;

  constructor(private readonly opts: MemoryWindowsOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Runs `ops` in order; synchronous (the memory store wraps it in a promise). */
  step(ops: readonly WindowOp[]): StepOutcome {
    const now = this.now();
    const counts: number[] = [];
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      let c = this.counters.get(op.key);
      if (c && c.until <= now) {
        this.counters.delete(op.key);
        c = undefined;
      }
      if (op.kind === 'check') {
        const v = c?.v ?? 0;
        counts.push(v);
        if (v >= op.points) return { refused: i, msLeft: c!.until - now, counts };
        continue;
      }
      if (!c) c = this.create(op.key, now + op.windowMs);
      c.v++;
      counts.push(c.v);
      if (op.kind === 'fail' && c.v === op.points) {
        c.until = now + op.windowMs;
        c.held = true;
        return { refused: i, msLeft: op.windowMs, counts };
      }
      if (op.kind === 'count' && c.v > op.points) return { refused: i, msLeft: c.until - now, counts };
    }
    return { refused: -1, msLeft: 0, counts };
  }

  /** Forgets a counter (an operator clearing a cooldown). */
  delete(key: string): void {
    this.counters.delete(key);
  }

  /** Drops the oldest counter that is not a running cooldown (among the 64 oldest), else the oldest. */
  private evictOne(): void {
    let n = 0;
    for (const [k, c] of this.counters) {
      if (!c.held) return void this.counters.delete(k);
      if (++n >= 64) break;
    }
    this.counters.delete(this.counters.keys().next().value!);
  }

  private create(key: string, until: number): { v: number; until: number } {
    if (this.counters.size >= this.opts.maxKeys) {
      // A full pass over expired counters at most once a second: when the map is full of live
      // ones, every new key would otherwise scan all of them.
      const now = this.now();
      if (now - this.sweptAt >= 1000) {
        this.sweptAt = now;
        for (const [k, c] of this.counters) if (c.until <= now) this.counters.delete(k);
      }
      if (this.counters.size >= this.opts.maxKeys) this.evictOne();
    }
    const c = { v: 0, until };
    this.counters.set(key, c);
    return c;
  }
}
