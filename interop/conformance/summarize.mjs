// Summarises a conformance results folder: one line per scenario (with the
// failing checks), then "<label>: N passed, N failed" (scenarios).
// Usage: node summarize.mjs <results-dir> <label>
import fs from 'node:fs';
import path from 'node:path';

const [dir, label] = process.argv.slice(2);
const pattern = /^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/;
const rows = [];
for (const entry of fs.existsSync(dir) ? fs.readdirSync(dir).sort() : []) {
  const file = path.join(dir, entry, 'checks.json');
  if (!fs.existsSync(file)) continue;
  const checks = JSON.parse(fs.readFileSync(file, 'utf8'));
  const failed = checks.filter((c) => c.status === 'FAILURE');
  const warned = checks.filter((c) => c.status === 'WARNING');
  rows.push({ scenario: (pattern.exec(entry) ?? [])[1] ?? entry, failed, warned });
}
let passed = 0;
for (const row of rows) {
  const verdict = row.failed.length ? 'FAIL' : row.warned.length ? 'WARN' : 'PASS';
  if (!row.failed.length) passed += 1;
  console.log(`  ${verdict} ${row.scenario}`);
  for (const c of [...row.failed, ...row.warned]) {
    console.log(`      ${c.status} ${c.id}: ${c.errorMessage ?? c.description ?? ''}`);
  }
}
console.log(`${label}: ${passed} passed, ${rows.length - passed} failed`);
