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

// The order of an enum means nothing, but api-smart-diff compares an AsyncAPI document's enums index by
// index: a value inserted in the middle (a new event type in the catalogue's order) would read as every
// later value replaced. List the after-document's values in the before-document's order, new ones last.
function withEnumsInReleasedOrder(before, after) {
  if (Array.isArray(before) && Array.isArray(after)) {
    after.forEach((item, index) => withEnumsInReleasedOrder(before[index], item));
  } else if (before && after && typeof before === "object" && typeof after === "object") {
    for (const [key, value] of Object.entries(after)) {
      if (key === "enum" && Array.isArray(value) && Array.isArray(before[key])) {
        const kept = before[key].filter((item) => value.includes(item));
        after[key] = [...kept, ...value.filter((item) => !kept.includes(item))];
      } else {
        withEnumsInReleasedOrder(before[key], value);
      }
    }
  }
}

const [beforeFile, afterFile] = process.argv.slice(2);
if (!beforeFile || !afterFile) {
  console.error("usage: node tools/spec-diff.mjs BEFORE.yaml AFTER.yaml");
  process.exit(2);
}
// js-yaml's own message repeats the whole document; a key given twice is an error to it (not to PyYAML).
function read(file) {
  try {
    return yaml.load(fs.readFileSync(file, "utf8"));
  } catch (error) {
    if (!(error instanceof yaml.YAMLException)) throw error;
    console.error(`${file}:${error.mark.line + 1}:${error.mark.column + 1}: not YAML: ${error.reason}`);
    process.exit(2);
  }
}
const load = (file) => withParameterLists(read(file));
const [before, after] = [load(beforeFile), load(afterFile)];
withEnumsInReleasedOrder(before, after);
const { diffs } = apiCompare(before, after);
process.stdout.write(JSON.stringify(diffs.map(classified), null, 1) + "\n");
