// Drives the real Node OpenFeature flagd provider (@openfeature/flagd-provider,
// in-process resolver) against flagd-redis-sync, for integration/tests/it/compat_node.rs.
// The counterpart of ../python/provider_check.py, with the same line protocol on stdout:
//
//     READY {"<flag>": {"value": ..., "variant": ..., "reason": ..., "error": ...}, ...}
//     CHANGED {"flags": {<same shape>}, "flags_changed": [...]}
//     STALE {"message": "..."}          the stream failed; the provider will reconnect
//     RECONNECTED {<same shape as READY>} the provider is ready again after a STALE
//
// READY comes once, after the provider has its first flag set (setProviderAndWait). Every
// PROVIDER_CONFIGURATION_CHANGED or (re-)READY event re-evaluates the flags and a CHANGED
// line is printed whenever the results differ from the last ones printed. STALE and
// RECONNECTED are printed once per disconnection (a RECONNECTED line comes after the
// CHANGED line, if any, of the flag set received on reconnecting).
// The script exits 0 when its standard input is closed.
//
// Any failure prints "FAIL <reason>" and exits non-zero: a provider that does not become
// ready, a provider error event, or the overall --timeout running out (a watchdog timer,
// unref'd by nothing, so even a hung provider ends the script). Diagnostics go to stderr.
//
// Usage: node provider_check.mjs --port PORT [--host H] [--selector S] [--timeout SECONDS]
//            [--deadline-ms MS] [--retry-backoff-max-ms MS] [--tls [--cert-path CA_PEM]]
//            [--socket-path PATH] [--default-authority NAME] TYPE:FLAG [TYPE:FLAG ...]
// where TYPE is bool, string, number or object.

import { OpenFeature, ProviderEvents } from '@openfeature/server-sdk';
import { FlagdProvider } from '@openfeature/flagd-provider';

const DEFAULTS = { bool: false, string: '<default>', number: -1, object: {} };

const out = (line) => process.stdout.write(line + '\n');
const log = (msg) =>
  process.stderr.write(`[provider_check ${(performance.now() / 1000).toFixed(3)}] ${msg}\n`);
const fail = (reason, code = 1) => {
  out(`FAIL ${reason}`);
  process.exit(code);
};

function parseArgs(argv) {
  const args = { host: '127.0.0.1', timeout: 60, flags: [] };
  const names = {
    '--host': 'host',
    '--port': 'port',
    '--selector': 'selector',
    '--timeout': 'timeout',
    '--deadline-ms': 'deadlineMs',
    '--retry-backoff-max-ms': 'retryBackoffMaxMs',
    '--cert-path': 'certPath',
    '--socket-path': 'socketPath',
    '--default-authority': 'defaultAuthority',
  };
  for (let i = 0; i < argv.length; i++) {
    const name = names[argv[i]];
    if (argv[i] === '--tls') {
      args.tls = true;
    } else if (name) {
      if (i + 1 >= argv.length) fail(`${argv[i]} needs a value`, 2);
      args[name] = argv[++i];
    } else if (argv[i].startsWith('--')) {
      fail(`unknown option ${argv[i]}`, 2);
    } else {
      const [kind, key] = [argv[i].split(':')[0], argv[i].split(':').slice(1).join(':')];
      if (!(kind in DEFAULTS) || !key) {
        fail(`bad flag spec ${JSON.stringify(argv[i])}: want TYPE:FLAG with TYPE in ${Object.keys(DEFAULTS)}`, 2);
      }
      args.flags.push([kind, key]);
    }
  }
  if (!args.port || args.flags.length === 0) fail('usage: --port PORT TYPE:FLAG...', 2);
  return args;
}

const args = parseArgs(process.argv.slice(2));
const timeoutSecs = Number(args.timeout);
setTimeout(() => fail(`overall deadline of ${timeoutSecs}s ran out`, 3), timeoutSecs * 1000);

const logger = {
  error: (...a) => log(`provider error: ${a.join(' ')}`),
  warn: (...a) => log(`provider warn: ${a.join(' ')}`),
  info: (...a) => log(`provider info: ${a.join(' ')}`),
  debug: (...a) => log(`provider debug: ${a.join(' ')}`),
};

const options = {
  resolverType: 'in-process',
  host: args.host,
  port: Number(args.port),
  tls: args.tls === true,
};
if (args.certPath !== undefined) options.certPath = args.certPath;
if (args.socketPath !== undefined) options.socketPath = args.socketPath;
if (args.defaultAuthority !== undefined) options.defaultAuthority = args.defaultAuthority;
if (args.selector !== undefined) options.selector = args.selector;
if (args.deadlineMs !== undefined) options.deadlineMs = Number(args.deadlineMs);
if (args.retryBackoffMaxMs !== undefined) options.retryBackoffMaxMs = Number(args.retryBackoffMaxMs);

const provider = new FlagdProvider(options, logger);
const client = OpenFeature.getClient();
const getters = {
  bool: (k, d) => client.getBooleanDetails(k, d),
  string: (k, d) => client.getStringDetails(k, d),
  number: (k, d) => client.getNumberDetails(k, d),
  object: (k, d) => client.getObjectDetails(k, d),
};

async function evaluate() {
  const result = {};
  for (const [kind, key] of args.flags) {
    const d = await getters[kind](key, DEFAULTS[kind]);
    result[key] = {
      value: d.value,
      variant: d.variant ?? null,
      reason: d.reason ?? null,
      error: d.errorCode ?? null,
    };
  }
  return result;
}

// Keys sorted at every level, so equal results print (and compare) equal.
const canonical = (v) =>
  Array.isArray(v)
    ? v.map(canonical)
    : v && typeof v === 'object'
      ? Object.fromEntries(Object.keys(v).sort().map((k) => [k, canonical(v[k])]))
      : v;
const dump = (v) => JSON.stringify(canonical(v));

let ready = false;
let stale = false;
let last = null;
let changedKeys = new Set();
// Events are handled one at a time, in order: evaluation is async.
let queue = Promise.resolve();
const enqueue = (f) => {
  queue = queue.then(f).catch((e) => fail(`handling an event: ${e?.stack ?? e}`));
};

async function reevaluate() {
  const now = dump(await evaluate());
  if (now !== last) {
    last = now;
    const keys = [...changedKeys].sort();
    changedKeys = new Set();
    out(`CHANGED {"flags":${now},"flags_changed":${JSON.stringify(keys)}}`);
  }
}

OpenFeature.addHandler(ProviderEvents.ConfigurationChanged, (details) => {
  log(`event configuration-changed: ${JSON.stringify(details)}`);
  enqueue(async () => {
    for (const k of details?.flagsChanged ?? []) changedKeys.add(k);
    if (ready) await reevaluate();
  });
});
OpenFeature.addHandler(ProviderEvents.Stale, (details) => {
  log(`event stale: ${JSON.stringify(details)}`);
  enqueue(async () => {
    if (ready && !stale) {
      stale = true;
      out(`STALE ${JSON.stringify({ message: details?.message ?? null })}`);
    }
  });
});
OpenFeature.addHandler(ProviderEvents.Ready, (details) => {
  log(`event ready: ${JSON.stringify(details)}`);
  enqueue(async () => {
    if (!ready) return;
    await reevaluate();
    if (stale) {
      stale = false;
      out(`RECONNECTED ${last}`);
    }
  });
});
OpenFeature.addHandler(ProviderEvents.Error, (details) => {
  log(`event error: ${JSON.stringify(details)}`);
  if (ready) fail(`provider error: ${details?.message}`);
});

try {
  await OpenFeature.setProviderAndWait(provider);
} catch (e) {
  fail(`provider did not become ready: ${e?.name}: ${e?.message}`);
}
enqueue(async () => {
  last = dump(await evaluate());
  ready = true;
  out(`READY ${last}`);
});

// Standard input closed: the test is done with us.
process.stdin.on('data', () => {});
process.stdin.on('end', () => {
  enqueue(async () => {
    log('stdin closed; shutting the provider down');
    await OpenFeature.close();
    process.exit(0);
  });
});
process.stdin.resume();
