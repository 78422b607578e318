// Runs the CLI from the TypeScript sources (npm run cli -- train ...), without building dist/.
import { main } from './cli.ts';

process.exitCode = await main(process.argv.slice(2));
