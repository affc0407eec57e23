// Compare two versions of one API document (OpenAPI 3.x or AsyncAPI 2.x) with api-smart-diff and
// print every change it finds as JSON: [{type, action, path, description}], path a JSON Pointer, type api-smart-diff's
// classification ("breaking", "non-breaking", "deprecated", "annotation" or "unclassified").
// Usage: node tools/spec-diff.mjs BEFORE.yaml AFTER.yaml
import fs from "node:fs";
import { apiCompare } from "api-smart-diff";
import yaml from "js-yaml";

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

// api-smart-diff classifies a whole `parameters` list added to an operation that had none as an
// annotation, so a new required parameter there would pass: give every operation a list first.
function withParameterLists(document) {
  for (const item of Object.values(document.paths ?? {})) {
    for (const [method, operation] of Object.entries(item ?? {})) {
      if (METHODS.includes(method) && operation && typeof operation === "object") operation.parameters ??= [];
    }
  }
  return document;
}

// A name added to a `required` list of what the client sends (a request body, at any depth, also
// inside an anyOf branch, which api-smart-diff calls non-breaking) or a parameter turned required
// refuses requests that were valid before.
const NEWLY_REQUIRED = /\/(requestBody|parameters)\/.*\/required(\/\d+)?$/;

function classified(diff) {
  const path = diff.path.map((key) => "/" + String(key).replaceAll("~", "~0").replaceAll("/", "~1")).join("");
  const type = diff.action === "add" && NEWLY_REQUIRED.test(path) && diff.after !== false ? "breaking" : diff.type;
  return { type, action: diff.action, path, description: diff.description ?? "" };
}

const [beforeFile, afterFile] = process.argv.slice(2);
if (!beforeFile || !afterFile) {
  console.error("usage: node tools/spec-diff.mjs BEFORE.yaml AFTER.yaml");
  process.exit(2);
}
const load = (file) => withParameterLists(yaml.load(fs.readFileSync(file, "utf8")));
const { diffs } = apiCompare(load(beforeFile), load(afterFile));
process.stdout.write(JSON.stringify(diffs.map(classified), null, 1) + "\n");
