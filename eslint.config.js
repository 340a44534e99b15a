// @ts-check
import js from '@eslint/js';
import tseslint from 'typescript-eslint';
import boundaries from 'eslint-plugin-boundaries';
import { layerElements, layerPolicies, sharedFiles } from './eslint.layers.js';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'pki/', 'coverage/', 'load/results/', 'nginx/*.js', '.tmp/'] },
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
  // Layers (docs/design/architecture.md): lib <- capabilities <- gate <- app; see eslint.layers.js.
  {
    files: ['src/**/*.ts'],
    plugins: { boundaries },
    settings: {
      'import/resolver': { typescript: { project: './tsconfig.json' } },
      'boundaries/elements': layerElements,
      'boundaries/files': sharedFiles,
    },
    rules: { 'boundaries/dependencies': ['error', { default: 'disallow', policies: layerPolicies }] },
  },
);
