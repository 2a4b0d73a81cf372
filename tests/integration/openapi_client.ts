// The README's quick-start request written against the types that
// openapi-typescript generates from docs/openapi.yaml (./api.d.ts).
// test_openapi.py compiles it with tsc --strict and runs it against the
// real server: node openapi_client.js BASE_URL TOKEN.
import type { paths } from "./api";

declare const process: { argv: string[]; exitCode?: number };

type Infer = paths["/api/infer"]["post"];
type InferBody = Infer["requestBody"]["content"]["application/json"];
type InferOk = Infer["responses"][200]["content"]["application/json"];
type Models = paths["/api/models"]["get"]["responses"][200]["content"]["application/json"];
type Balance = paths["/api/credits/balance"]["get"]["responses"][200]["content"]["application/json"];

// As in the README: no outputsCount (it defaults to 1), params empty or set.
const quickStart: InferBody = {
    modelId: "seedream_image",
    inputs: { prompt: "a majestic dragon" },
    params: {},
};
const withSize: InferBody = {
    modelId: "seedream_image",
    inputs: { prompt: "a majestic dragon" },
    params: { image_size: "square_hd" },
};

// The generated types must refuse what the server refuses: were they `any`,
// these directives would be unused and tsc would fail.
// @ts-expect-error inputs.prompt is required
const noPrompt: InferBody = { modelId: "seedream_image", inputs: {} };
// @ts-expect-error a parameter is a string, number or boolean
const objectParam: InferBody = { modelId: "seedream_image", inputs: { prompt: "p" }, params: { image_size: { w: 1 } } };
// @ts-expect-error outputsCount is a number
const textCount: InferBody = { modelId: "seedream_image", inputs: { prompt: "p" }, outputsCount: "2" };
void [noPrompt, objectParam, textCount];

async function infer(base: string, token: string, body: InferBody): Promise<InferOk> {
    const r = await fetch(`${base}/api/infer`, {
        method: "POST",
        headers: { "Content-Type": "application/json", Cookie: `lr_session=${token}` },
        body: JSON.stringify(body),
    });
    if (r.status !== 200)
        throw new Error(`POST /api/infer: HTTP ${r.status}: ${await r.text()}`);
    return (await r.json()) as InferOk;
}

async function main(): Promise<void> {
    const [base, token] = process.argv.slice(2);
    const models = (await (await fetch(`${base}/api/models`)).json()) as Models;
    const seedream = models.find((m) => m.id === "seedream_image");
    const sizes: (string | number | boolean)[] = seedream?.paramsSchema["image_size"]?.options ?? [];
    if (!sizes.includes("square_hd"))
        throw new Error("seedream_image does not offer image_size square_hd");
    const outcomes = [];
    for (const body of [quickStart, withSize]) {
        const ok: InferOk = await infer(base, token, body);
        const url: string | null = ok.url;
        const first: string = ok.urls[0];
        outcomes.push({ generationId: ok.generationId, url, first, balance: ok.balance,
                        outputs: ok.meta.outputsCount });
    }
    const b = (await (await fetch(`${base}/api/credits/balance`,
        { headers: { Authorization: `Bearer ${token}` } })).json()) as Balance;
    console.log(JSON.stringify({ outcomes, balance: b.balance }));
}

main().catch((e: unknown) => {
    console.error(e instanceof Error ? e.message : e);
    process.exitCode = 1;
});
