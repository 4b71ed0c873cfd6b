// What a TypeScript user writes against kv-store, type-checked in CI
// against types generated from the committed spec (`npm run check`).
import createClient from "openapi-fetch";
import type { components, paths } from "./kv-store";

type Problem = components["schemas"]["Problem"];
type OpResult = components["schemas"]["OpResult"];

/** A client of the server at `baseUrl` (with `token` when it has an auth file). */
export function connect(baseUrl: string, token?: string) {
  // With --auth-file, every call carries the token.
  const headers = token === undefined ? undefined : { Authorization: `Bearer ${token}` };
  return createClient<paths>({ baseUrl, headers });
}

type Kv = ReturnType<typeof connect>;

const kv = connect("http://localhost:3000");

export async function roundTrip(): Promise<string | undefined> {
  // PUT bodies are raw bytes: keep openapi-fetch from JSON-encoding them.
  const put = await kv.PUT("/store/{key}", {
    params: { path: { key: "user:1" }, query: { ttl: 60 } },
    body: "Ada",
    bodySerializer: (body) => body,
  });
  const etag = put.response.headers.get("ETag") ?? undefined;

  const got = await kv.GET("/store/{key}", {
    params: { path: { key: "user:1" }, header: { "If-None-Match": etag } },
    parseAs: "text",
  });
  if (got.error) {
    const problem: Problem = got.error;
    throw new Error(`${problem.status} ${problem.title}: ${problem.detail}`);
  }
  return got.data;
}

export async function swap(expected: string | null, next: string): Promise<Problem | undefined> {
  const { error } = await kv.POST("/store/cas/{key}", {
    params: { path: { key: "counter" } },
    body: { expected, new: next },
  });
  // 412 carries the current value and revision.
  return error;
}

export async function transfer(): Promise<OpResult[]> {
  const { data, error } = await kv.POST("/batch", {
    body: [
      { method: "CAS", key: "balance:a", expected: "10", value: "5" },
      { method: "PUT", key: "balance:b", value: "5" },
    ],
  });
  if (error) {
    // 409: per-operation results in the problem's `results` member.
    return error.results ?? [];
  }
  return data;
}

// Every key under a prefix, a page at a time; every page shows the store at
// the first page's revision, which a watch of the prefix can follow on from.
export async function listAll(
  kv: Kv,
  prefix: string,
  limit = 1000,
): Promise<{ keys: string[]; revision: number }> {
  const keys: string[] = [];
  let cursor: string | undefined;
  let revision = 0;
  for (;;) {
    const { data, error } = await kv.GET("/store", {
      params: { query: { prefix, limit, cursor } },
    });
    if (error) {
      // 410 history-gone: the listing's revision is gone, start over.
      throw new Error(`${error.status} ${error.title}: ${error.detail}`);
    }
    revision = data.revision;
    keys.push(...data.items.map((item) => item.key));
    if (!data.next) {
      return { keys, revision };
    }
    cursor = data.next;
  }
}

export async function deletePrefix(kv: Kv, prefix: string): Promise<number> {
  const { data } = await kv.DELETE("/store", { params: { query: { prefix } } });
  return data?.deleted ?? 0;
}

export async function status(): Promise<number> {
  const { data } = await kv.GET("/status");
  return data?.revision ?? 0;
}

// Watches are Server-Sent Events: in a browser, EventSource is the client
// (the generated type for the stream body is not a usable one). `?since=`
// resumes after a revision; EventSource sends Last-Event-ID by itself when
// it reconnects.
export function watch(key: string, since?: number): EventSource {
  const query = since === undefined ? "" : `?since=${since}`;
  const events = new EventSource(`http://localhost:3000/watch_key/${encodeURIComponent(key)}${query}`);
  events.addEventListener("put", (event) => {
    const data: components["schemas"]["WatchEvent"] = JSON.parse((event as MessageEvent).data);
    console.log(data.key, data.value, data.revision);
  });
  return events;
}
