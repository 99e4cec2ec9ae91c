// Validates custom resources against their CRDs' OpenAPI schemas, as the API server would:
// the ajv validators that @kubernetes-models/gateway-api and @kubernetes-models/argo-rollouts
// generate from the upstream CRDs (types, enums, ranges, required fields, patterns, list sizes).
// They do not see unknown fields (the CRDs do not forbid them; the API server prunes them) nor
// CEL rules (x-kubernetes-validations): .ci/validate-manifests keeps those checks.
//
// usage: node validate-crds.mjs NODE_MODULES OBJECTS.json
//   OBJECTS.json: [{"where": "<build label>", "object": {...}}, ...]
// Prints one line per object ("ok" or the errors); exit 1 when any object is invalid, 2 when an
// object's apiVersion/kind has no schema in these packages.
import { readFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const [nodeModules, input] = process.argv.slice(2);
const PACKAGES = {
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "argoproj.io": "@kubernetes-models/argo-rollouts",
};

let failed = 0;
let missing = 0;
for (const { where, object } of JSON.parse(readFileSync(input, "utf8"))) {
  const [group, version] = String(object.apiVersion).split("/");
  const name = `${object.kind}/${object.metadata?.name}`;
  const file = join(nodeModules, PACKAGES[group] ?? "-", group, version ?? "-", `${object.kind}.js`);
  if (!PACKAGES[group] || !existsSync(file)) {
    console.log(`FAIL ${where}: ${name}: no schema for ${object.apiVersion} ${object.kind}`);
    missing++;
    continue;
  }
  const Model = (await import(pathToFileURL(file).href))[object.kind];
  try {
    new Model(object).validate();
  } catch (e) {
    const errors = (e.errors ?? [{ instancePath: "", message: e.message }])
      .map((x) => `${x.instancePath.replace(/^\//, "").replaceAll("/", ".") || "(root)"} ${x.message}`);
    console.log(`FAIL ${where}: ${name} (${object.apiVersion}):\n${[...new Set(errors)].map((x) => `    ${x}`).join("\n")}`);
    failed++;
    continue;
  }
  console.log(`ok   ${where}: ${name} (${object.apiVersion} schema)`);
}
process.exit(missing ? 2 : failed ? 1 : 0);
