// Parses an AsyncAPI document with the AsyncAPI project's own parser (the one its tools use).
//
// Usage: node tools/asyncapi-check/validate.mjs schemas/asyncapi.json [more documents...]
// For each document: a line "== <file>", every diagnostic of severity error or warning, one a
// line, and a summary line. Several documents in one run share Node's start (seconds each).
// Exit codes: 0 when every document parsed with no error, 1 when one did not, 2 for bad usage.
import { readFileSync } from "node:fs";
import { Parser, DiagnosticSeverity } from "@asyncapi/parser";

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node validate.mjs <asyncapi document> [more documents...]");
  process.exit(2);
}

const parser = new Parser();
const label = {
  [DiagnosticSeverity.Error]: "error",
  [DiagnosticSeverity.Warning]: "warning",
};
let failed = false;
for (const file of files) {
  console.log(`== ${file}`);
  const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), {
    source: file,
  });
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
    failed = true;
    continue;
  }
  console.log(
    `${file}: valid AsyncAPI ${document.version()}: ${document.channels().length} channels, ` +
      `${document.operations().length} operations, ${document.messages().length} messages ` +
      `(${warnings} warnings)`,
  );
}
process.exit(failed ? 1 : 0);
