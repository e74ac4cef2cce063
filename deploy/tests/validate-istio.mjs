// Validates Istio objects (a JSON array, argv[2]) against Istio's CRD schemas, as packaged
// by @kubernetes-models/istio; prints one line per object, exits 1 if any fails.
import { readFileSync } from "node:fs";

const objects = JSON.parse(readFileSync(process.argv[2], "utf8"));
let failed = 0;
for (const o of objects) {
  const [group, version] = o.apiVersion.split("/");
  let Model;
  try {
    const module = await import(`@kubernetes-models/istio/${group}/${version}/${o.kind}`);
    Model = module[o.kind];
  } catch {
    failed++;
    console.log(`FAIL ${o.apiVersion} ${o.kind} ${o.metadata.name}: no such Istio kind`);
    continue;
  }
  try {
    new Model(o).validate();
    console.log(`ok   ${o.kind} ${o.metadata.name}`);
  } catch (e) {
    failed++;
    console.log(`FAIL ${o.kind} ${o.metadata.name}: ${e.message}`);
  }
}
process.exit(failed ? 1 : 0);
