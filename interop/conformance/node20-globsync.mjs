// Node < 22 lacks fs.globSync, which the conformance CLI imports at start-up
// (it only uses it for a subcommand we do not run). This loader hook rewrites
// that one import in the CLI's bundle into a local stub; nothing else changes.
// Loaded with: node --import ./node20-register.mjs <cli>
export async function load(url, context, nextLoad) {
  const loaded = await nextLoad(url, context);
  if (!url.includes('/@modelcontextprotocol/conformance/')) return loaded;
  const text = typeof loaded.source === 'string' ? loaded.source : Buffer.from(loaded.source ?? '').toString('utf8');
  if (!text.includes('globSync')) return loaded;
  const importFs = /import\s*\{([^}]*)\}\s*from\s*(["'])(?:node:)?fs\2\s*;?/g;
  let stubs = '';
  const rewritten = text.replace(importFs, (statement, names, quote) => {
    const kept = [];
    for (const raw of names.split(',')) {
      const name = raw.trim();
      if (!name) continue;
      const [imported, local] = name.split(/\s+as\s+/);
      if (imported.trim() === 'globSync') {
        const binding = (local ?? imported).trim();
        stubs += `const ${binding} = () => { throw new Error('fs.globSync needs Node 22'); };\n`;
      } else {
        kept.push(name);
      }
    }
    return `import { ${kept.join(', ')} } from ${quote}fs${quote};`;
  });
  if (!stubs) return loaded;
  // Keep a shebang line first if there is one.
  const shebang = rewritten.startsWith('#!') ? rewritten.slice(0, rewritten.indexOf('\n') + 1) : '';
  const body = rewritten.slice(shebang.length);
  return { ...loaded, format: loaded.format ?? 'module', source: shebang + stubs + body, shortCircuit: true };
}
