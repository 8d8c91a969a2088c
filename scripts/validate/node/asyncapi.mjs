// Parses and validates an AsyncAPI document with @asyncapi/parser (the
// AsyncAPI project's parser: schema validation plus its Spectral rules).
// Exits non-zero on any error-level diagnostic; prints warnings.
import { Parser, fromFile } from '@asyncapi/parser';
import { argv, exit } from 'node:process';

const path = argv[2];
const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, path).parse();
const severity = ['error', 'warning', 'info', 'hint'];
let errors = 0;
for (const d of diagnostics) {
  if (d.severity === 0) errors++;
  if (d.severity <= 1) console.log(`${severity[d.severity]} ${d.code} at ${d.path.join('.')}: ${d.message}`);
}
if (errors || !document) {
  console.log(`asyncapi: ${path} has ${errors} error(s)`);
  exit(1);
}
console.log(`asyncapi: ${path} valid (AsyncAPI ${document.version()}, ${document.channels().length} channels, ${document.operations().length} operations, ${document.messages().length} messages)`);
