// Write a new private signing JWKS (one ES256 key with a fresh kid) to FILE, replacing what is there.
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { writeFileSync, mkdirSync } from "node:fs";
import { dirname } from "node:path";

const [file] = process.argv.slice(2);
if (!file) {
  console.error("usage: node devauth/keys.js FILE");
  process.exit(2);
}
const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
const key = {
  ...privateKey.export({ format: "jwk" }),
  kid: `devauth-${randomBytes(6).toString("hex")}`,
  alg: "ES256",
  use: "sig",
};
mkdirSync(dirname(file), { recursive: true });
writeFileSync(file, JSON.stringify({ keys: [key] }), { mode: 0o600 });
console.log(`devauth: wrote signing key ${key.kid} to ${file}`);
