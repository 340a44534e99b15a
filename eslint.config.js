// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'pki/', 'coverage/', 'load/results/', 'nginx/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'Read environment variables only in src/config (or the CLI entry point).' }],
    },
  },
  {
    files: ['src/config/**', 'src/cli/**', 'test/**', 'load/**', 'vitest.config.ts', 'examples/**'],
    rules: { 'no-restricted-properties': 'off' },
  },
);
