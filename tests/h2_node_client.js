// HTTP/2 client on Node's built-in http2 module, for tests/test_h2_interop.py.
// node h2_node_client.js URL COUNT [CA_FILE]
// Sends COUNT POSTs to URL/echo?i=N at once on one session; prints a JSON list of
// {i, status, body} (body: the parsed JSON answer), then exits 0.
"use strict";
const http2 = require("node:http2");
const fs = require("node:fs");

const [url, countText, ca] = process.argv.slice(2);
const count = Number(countText);
const session = http2.connect(url, ca ? { ca: fs.readFileSync(ca) } : {});
session.on("error", (err) => {
  console.error(String(err));
  process.exit(2);
});
const results = [];
let pending = count;
for (let i = 0; i < count; i++) {
  const request = session.request({ ":method": "POST", ":path": "/echo?i=" + i, "content-type": "text/plain" });
  const chunks = [];
  let status = null;
  request.on("response", (headers) => { status = headers[":status"]; });
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    results.push({ i, status, body: JSON.parse(Buffer.concat(chunks).toString()) });
    if (--pending === 0) {
      session.close();
      console.log(JSON.stringify(results));
    }
  });
  request.on("error", (err) => {
    console.error("stream " + i + ": " + err);
    process.exit(3);
  });
  request.end("node body " + i);
}
