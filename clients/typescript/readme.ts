import createClient from "openapi-fetch";
import type { paths } from "./kv-store";

const kv = createClient<paths>({ baseUrl: "http://localhost:3000" });
const key = { params: { path: { key: "greeting" } } };
await kv.PUT("/store/{key}", { ...key, body: "hello from TypeScript", bodySerializer: (b) => b });
const { data } = await kv.GET("/store/{key}", { ...key, parseAs: "text" });
console.log(data); // hello from TypeScript
