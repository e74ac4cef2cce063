// Validates custom resources against their CRD schemas, as packaged by @kubernetes-models
// (each package's generated validators). Input (argv[2]): a JSON array of
// { "package": "@kubernetes-models/istio", "object": {...} }. Prints one line per object and
// exits 1 if any fails or has no model in its package.
import { readFileSync } from "node:fs";

const items = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const { package: pkg, object: o } of items) {
  const [group, version] = o.apiVersion.split("/");
  const what = `${o.apiVersion} ${o.kind} ${o.metadata.name}`;
  let Model;
  try {
    const module = await import(`${pkg}/${group}/${version}/${o.kind}`);
    Model = module[o.kind];
  } catch {
    failed++;
    console.log(`FAIL ${what}: ${pkg} has no such kind`);
    continue;
  }
  try {
    new Model(o).validate();
    console.log(`ok   ${what}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${what}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
