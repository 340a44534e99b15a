/**
 * The one place that loads @peculiar/x509: its dependency tsyringe needs the Reflect metadata
 * API at load time, so `reflect-metadata` comes first; crypto is bound to Node's WebCrypto.
 * @module
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';

// Without the DOM lib the package's `Crypto` type is not Node's, though the object is the same API.
x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** @peculiar/x509, ready to use. */
export { x509 };
