// Validates an OpenAPI 3.1 document with @readme/openapi-parser (the OpenAPI
// Initiative's schema for 3.1, plus $ref resolution). Exits non-zero when it
// is not valid.
import { validate } from '@readme/openapi-parser';
import { readFileSync } from 'node:fs';
import { argv, exit } from 'node:process';

const path = argv[2];
const spec = JSON.parse(readFileSync(path, 'utf8'));
const result = await validate(spec);
if (!result.valid) {
  for (const e of result.errors) console.log(`error: ${e.message}`);
  console.log(`openapi: ${path} is not valid`);
  exit(1);
}
for (const w of result.warnings ?? []) console.log(`warning: ${w.message}`);
console.log(`openapi: ${path} valid (OpenAPI ${spec.openapi}, ${Object.keys(spec.paths).length} paths)`);
