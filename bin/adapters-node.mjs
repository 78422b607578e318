#!/usr/bin/env node
// The `adapters-node` command (lib/cli.ts, compiled to dist/ by `npm install`).
import { main } from '../dist/cli.js';

process.exitCode = await main(process.argv.slice(2));
