// A Function URL client as a Node.js team writes one: SigV4-signed with the AWS SDK's signer for
// service "lambda", the body written in pieces with req.write() and no content-length, so node
// sends it with Transfer-Encoding: chunked.
//
//   node client.mjs URL BODY_FILE [REGION]
//
// Prints the answer's body on stdout; exits 1 on a non-2xx answer, 2 when the request fails.
// Credentials come from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, else fake ones.
import { readFileSync } from "node:fs";
import http from "node:http";
import https from "node:https";
import { Sha256 } from "@aws-crypto/sha256-js";
import { SignatureV4 } from "@smithy/signature-v4";

const [url, bodyFile, region = "eu-west-1"] = process.argv.slice(2);
if (!url || !bodyFile) {
  console.error("usage: node client.mjs URL BODY_FILE [REGION]");
  process.exit(2);
}
const target = new URL(url);
const body = readFileSync(bodyFile);
const signer = new SignatureV4({
  service: "lambda",
  region,
  sha256: Sha256,
  credentials: {
    accessKeyId: process.env.AWS_ACCESS_KEY_ID ?? "AKIDEXAMPLE",
    secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY ?? "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
    sessionToken: process.env.AWS_SESSION_TOKEN,
  },
});
const signed = await signer.sign({
  method: "POST",
  protocol: target.protocol,
  hostname: target.hostname,
  port: target.port ? Number(target.port) : undefined,
  path: target.pathname,
  query: Object.fromEntries(target.searchParams),
  headers: { host: target.host, "content-type": "application/json" },
  body,
});

const request = (target.protocol === "https:" ? https : http).request({
  method: "POST",
  hostname: target.hostname,
  port: target.port || undefined,
  path: target.pathname + target.search,
  headers: signed.headers,
});
request.on("response", (response) => {
  const chunks = [];
  response.on("data", (chunk) => chunks.push(chunk));
  response.on("end", () => {
    process.stdout.write(Buffer.concat(chunks).toString("utf8") + "\n");
    if (response.statusCode < 200 || response.statusCode >= 300) {
      console.error(`HTTP ${response.statusCode}`);
      process.exitCode = 1;
    }
  });
});
request.on("error", (error) => {
  console.error(`request failed: ${error.message}`);
  process.exitCode = 2;
});
for (let start = 0; start < body.length; start += 64) {
  request.write(body.subarray(start, start + 64));
}
request.end();
