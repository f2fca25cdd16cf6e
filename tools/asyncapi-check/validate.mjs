// Parses an AsyncAPI document with the AsyncAPI project's own parser (the one its tools use).
//
// Usage: node tools/asyncapi-check/validate.mjs schemas/asyncapi.json
// Prints every diagnostic of severity error or warning, one a line, and a summary line.
// Exit codes: 0 when the document parsed with no error, 1 when it did not, 2 for bad usage.
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const [file, ...extra] = process.argv.slice(2);
if (file === undefined || extra.length > 0) {
  console.error("usage: node validate.mjs <asyncapi document>");
  process.exit(2);
}

const parser = new Parser();
const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), {
  source: file,
});

const label = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
};
let errors = 0;
let warnings = 0;
for (const d of diagnostics) {
  const severity = label[d.severity];
  if (severity === undefined) continue; // information and hints: not ours to act on
  if (d.severity === DiagnosticSeverity.Error) errors += 1;
  else warnings += 1;
  const where = d.path.length > 0 ? d.path.join(".") : "(document)";
  console.log(`${severity} ${d.code} at ${where}: ${d.message}`);
}

if (document === undefined || errors > 0) {
  console.log(`${file}: invalid (${errors} errors, ${warnings} warnings)`);
  process.exit(1);
}
console.log(
  `${file}: valid AsyncAPI ${document.version()}: ${document.channels().length} channels, ` +
    `${document.operations().length} operations, ${document.messages().length} messages ` +
    `(${warnings} warnings)`,
);
