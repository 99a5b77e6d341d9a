// Generates src/generated/types.ts from the JSON Schema bundle with the pinned
// json-schema-to-typescript. Run through `cargo xtask sdk` (or `npm run generate`
// after `cargo xtask schema`); `cargo xtask check` runs it into a temporary file.
//
// usage: node scripts/generate-types.mjs [--bundle PATH] [--out PATH]

import { readFile, writeFile, mkdir } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { compile } from "json-schema-to-typescript";

const here = dirname(fileURLToPath(import.meta.url));
const { values } = parseArgs({
  options: {
    bundle: { type: "string", default: resolve(here, "../../schema/dspeak.schema.json") },
    out: { type: "string", default: resolve(here, "../src/generated/types.ts") },
  },
});

const bundle = JSON.parse(await readFile(values.bundle, "utf8"));
const defs = prepare(bundle.$defs);

// json-schema-to-typescript emits the types reachable from the root. The root lists every
// def as a property, so each gets a named, exported type; the root type itself is dropped.
const ROOT = "DspeakContractRoot";
const root = {
  $schema: bundle.$schema,
  title: ROOT,
  type: "object",
  properties: Object.fromEntries(Object.keys(defs).map((name) => [name, { $ref: `#/$defs/${name}` }])),
  additionalProperties: false,
  $defs: defs,
};

let ts = await compile(root, ROOT, {
  bannerComment: "",
  // Input types are open in JSON Schema (the server ignores unknown members), but in
  // TypeScript an index signature on every type would hide typos: leave them out.
  additionalProperties: false,
  unknownAny: true,
  strictIndexSignatures: true,
  format: true,
  style: { printWidth: 100, singleQuote: false, trailingComma: "all" },
});

// Drop the synthetic root interface.
ts = ts.replace(new RegExp(`export interface ${ROOT} \\{[\\s\\S]*?\\n\\}\\n\\n?`), "");
ts = acceptUndefined(ts, inputTypes(bundle));

const header =
  "// " + bundle.$comment.replace("`cargo xtask schema`", "`cargo xtask sdk`") + "\n" +
  "// Wire types of the dspeak API, from schema/dspeak.schema.json (json-schema-to-typescript).\n" +
  "// `FooInput` types are what the server accepts; `Foo` types are what it sends.\n\n";
await mkdir(dirname(values.out), { recursive: true });
await writeFile(values.out, header + ts);

/** TypeScript-only adjustments of a copy of the defs; the schema itself stays as it is. */
function prepare(source) {
  const defs = structuredClone(source);
  const pascal = (s) => s.charAt(0).toUpperCase() + s.slice(1);
  const annotations = new Set(["description", "default", "examples", "deprecated", "readOnly", "writeOnly"]);
  // Visits every subschema (not the maps that hold them, whose keys are member names).
  const walk = (schema) => {
    if (schema === null || typeof schema !== "object" || Array.isArray(schema)) return;
    // Titles name types; only the ones set below should.
    delete schema.title;
    // `{$ref, description}` would make json-schema-to-typescript copy the referenced type
    // under a numbered name (`TransportId1`); wrap the reference so the doc stays on the member.
    if (typeof schema.$ref === "string" && Object.keys(schema).length > 1) {
      schema.allOf = [{ $ref: schema.$ref }];
      delete schema.$ref;
      delete schema.default;
    }
    // A schema without any constraint is any JSON value (`payload`): `unknown`, not an object.
    if (Object.keys(schema).every((k) => annotations.has(k))) schema.tsType = "unknown";
    for (const key of ["properties", "patternProperties", "$defs"]) {
      Object.values(schema[key] ?? {}).forEach(walk);
    }
    for (const key of ["allOf", "anyOf", "oneOf", "prefixItems"]) (schema[key] ?? []).forEach(walk);
    for (const key of ["items", "additionalProperties", "not", "if", "then", "else"]) walk(schema[key]);
  };
  Object.values(defs).forEach(walk);
  for (const [name, schema] of Object.entries(defs)) {
    schema.title = name;
    // Variants of internally tagged enums (`type` tag) get names: `PeerJoinedEvent`.
    for (const variant of schema.oneOf ?? []) {
      const tag = variant?.properties?.type?.const;
      if (typeof tag === "string") variant.title = pascal(tag) + name;
    }
  }
  return defs;
}

/**
 * The types a client builds: every method's params and the token claims, with what they
 * refer to. (What the server sends is never one of them: schemars names the deserialize
 * side of a type that differs `FooInput`.)
 */
function inputTypes(bundle) {
  const names = new Set();
  const visit = (schema) => {
    if (schema === null || typeof schema !== "object") return;
    const ref = typeof schema.$ref === "string" && /^#\/\$defs\/(.+)$/.exec(schema.$ref);
    if (ref && !names.has(ref[1])) {
      names.add(ref[1]);
      visit(bundle.$defs[ref[1]]);
    }
    Object.values(schema).forEach(visit);
  };
  const meta = bundle["x-dspeak"];
  Object.values(meta.methods).forEach((method) => visit(method.params));
  visit(meta.tokenClaims);
  return names;
}

/**
 * Lets every optional member of the input types also take `undefined`
 * (`token?: string | null | undefined`), so params built from optional values type-check
 * under `exactOptionalPropertyTypes`; JSON drops a member set to `undefined`, so the
 * server sees it missing. What the server sends keeps exact optional members, which
 * mediasoup-client's types (`channels?: number`) accept.
 */
function acceptUndefined(source, inputs) {
  const lines = source.split("\n");
  let current;
  for (let i = 0; i < lines.length; i++) {
    const declaration = /^export (?:interface|type) (\w+)/.exec(lines[i]);
    if (declaration) current = declaration[1];
    const member = /^(\s+)(?:readonly )?(?:[\w$]+|"[^"]*")\?: (.*)$/.exec(lines[i]);
    if (!member || !inputs.has(current)) continue;
    const [, indent, type] = member;
    // The member's type ends on its own line, or on the line closing it at the same indent.
    let end = i;
    if (!type.endsWith(";")) {
      while (end < lines.length && !(lines[end].startsWith(`${indent}}`) && lines[end].endsWith(";"))) end++;
      if (end === lines.length) throw new Error(`cannot find the end of member: ${lines[i]}`);
    }
    if (/(?:\bunknown|\| undefined);$/.test(lines[end])) continue;
    lines[end] = `${lines[end].slice(0, -1)} | undefined;`;
  }
  return lines.join("\n");
}
