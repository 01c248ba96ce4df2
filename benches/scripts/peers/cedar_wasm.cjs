// Times @cedar-policy/cedar-wasm on a peer-comparison workload.
//
//   node cedar_wasm.cjs WORKLOAD_DIR CEDAR_WASM_DIR ENTITIES SECONDS MAX_PASSES
//
// The policy set and the schema are pre-parsed once (preparsePolicySet,
// preparseSchema); each call is one statefulIsAuthorized on the Cedar text
// as generated. The stateful API takes entities on every call and has no
// way to keep them, so ENTITIES chooses what each call passes:
//   slice: the principal and resource with all their ancestors, which is
//          everything these policies can reach (what a caller would pass);
//   whole: the bundle's entire entity store, parsed on every call.
// The loop is the one in benches/src/peers/timing.rs: one untimed pass that
// checks every decision, then timed passes, each call timed on its own.
// Prints one JSON object on stdout; exits non-zero on any mismatch.
"use strict";

const fs = require("fs");
const path = require("path");

const [dir, moduleDir, entitiesMode, secondsArg, maxPassesArg] = process.argv.slice(2);
const cedar = require(path.resolve(moduleDir, "nodejs"));
const seconds = Number(secondsArg || "3");
const maxPasses = Number(maxPassesArg || "50");

const read = (name) => fs.readFileSync(path.join(dir, name), "utf8");
const policies = read("bundle/generated.cedar");
const schema = read("bundle/saas.cedarschema");
const entities = JSON.parse(read("bundle/entities.json"));
const model = JSON.parse(read("model.json"));
const requests = JSON.parse(read("requests.json")).requests;

const key = (uid) => `${uid.type}::${uid.id}`;
const byKey = new Map(entities.map((e) => [key(e.uid), e]));
const ancestors = new Map(model.entities.map((e) => [key(e.uid), e.ancestors]));

function slice(...uids) {
  const out = new Map();
  for (const uid of uids) {
    for (const one of [uid, ...(ancestors.get(key(uid)) || [])]) {
      const entity = byKey.get(key(one));
      if (entity) out.set(key(one), entity);
    }
  }
  return [...out.values()];
}

function check(answer, what) {
  if (answer.type !== "success") {
    throw new Error(`${what}: ${JSON.stringify(answer.errors)}`);
  }
}

const loadStart = process.hrtime.bigint();
check(cedar.preparsePolicySet("bundle", { staticPolicies: policies }), "preparsePolicySet");
check(cedar.preparseSchema("saas", schema), "preparseSchema");
const loadMs = Number(process.hrtime.bigint() - loadStart) / 1e6;

const calls = requests.map((r) => ({
  principal: r.principal,
  action: r.action,
  resource: r.resource,
  context: r.context,
  preparsedSchemaName: "saas",
  validateRequest: true,
  preparsedPolicySetId: "bundle",
  entities: entitiesMode === "whole" ? entities : slice(r.principal, r.resource),
}));
const expected = requests.map((r) => r.expected === "allow");

function decide(i) {
  const answer = cedar.statefulIsAuthorized(calls[i]);
  if (answer.type !== "success") {
    throw new Error(`request ${i}: ${JSON.stringify(answer.errors)}`);
  }
  return answer.response.decision === "allow";
}

const wrong = [];
for (let i = 0; i < calls.length; i++) {
  if (decide(i) !== expected[i]) wrong.push(i);
}
function failOnMismatch() {
  if (wrong.length > 0) {
    process.stderr.write(
      `cedar-wasm: ${wrong.length} of ${calls.length} decisions differ from ours, first at ${wrong.slice(0, 8)}\n`,
    );
    process.exit(1);
  }
}
failOnMismatch();

const samples = [];
let passes = 0;
const started = process.hrtime.bigint();
while (
  passes === 0 ||
  (passes < maxPasses && Number(process.hrtime.bigint() - started) / 1e9 < seconds)
) {
  for (let i = 0; i < calls.length; i++) {
    const begun = process.hrtime.bigint();
    const allowed = decide(i);
    samples.push(Number(process.hrtime.bigint() - begun));
    if (allowed !== expected[i]) wrong.push(i);
  }
  passes += 1;
}
failOnMismatch();

samples.sort((a, b) => a - b);
const rank = (f) => samples[Math.min(samples.length, Math.max(1, Math.ceil(f * samples.length))) - 1];
const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
const pkg = JSON.parse(fs.readFileSync(path.join(moduleDir, "package.json"), "utf8"));
process.stdout.write(
  JSON.stringify({
    engine: "cedar-wasm",
    version: pkg.version,
    cedar_version: cedar.getCedarVersion(),
    node_version: process.version,
    entities: entitiesMode,
    load_ms: loadMs,
    summary: {
      calls: samples.length,
      passes,
      p50_ns: rank(0.5),
      p99_ns: rank(0.99),
      mean_ns: Math.round(mean),
      decisions_per_second: 1e9 / mean,
    },
  }) + "\n",
);
