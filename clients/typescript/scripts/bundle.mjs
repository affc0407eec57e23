// Bundle the SDK's built ESM into one browser file, as an app's bundler would (for the Chromium test).
import { build } from "esbuild";

await build({
  entryPoints: ["dist/index.js"],
  bundle: true,
  format: "esm",
  platform: "browser",
  target: "es2022",
  outfile: "build/browser/vora-client.js",
  logLevel: "warning",
});
