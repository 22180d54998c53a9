// openai_client.cjs - the official OpenAI Node client (npm package "openai",
// unchanged) against graft serve: list models, a completion, a streamed one,
// then an edit and an undo (through the client's generic post/delete, as the
// API has no edits endpoint of its own) that change what it gets.
// Usage: node openai_client.cjs BASE_URL API_KEY PROMPT TARGET  (NODE_PATH finds "openai")
const OpenAI = require("openai");
const [base, key, prompt, target] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });

function must(cond, what) {
  if (!cond) { console.error("FAIL: " + what); process.exit(1); }
}

async function complete(model) {
  const r = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0 });
  must(r.object === "text_completion" && r.choices.length === 1, "completion shape: " + JSON.stringify(r));
  return r.choices[0].text;
}

(async () => {
  const models = await client.models.list();
  const model = models.data[0].id;
  must(typeof model === "string" && model.length > 0, "models.list gave no model");
  const before = await complete(model);
  must(!before.startsWith(" " + target), `the model already says '${target}': '${before}'`);
  let streamed = "";
  const stream = await client.completions.create({ model, prompt, max_tokens: 6, temperature: 0, stream: true });
  for await (const chunk of stream) streamed += chunk.choices[0].text;
  must(streamed === before, `streamed '${streamed}' vs plain '${before}'`);

  const edit = await client.post("/edits", { body: { prompt, target } });
  must(edit.reproduced === true, "edit did not take: " + JSON.stringify(edit));
  const after = await complete(model);
  must(after.startsWith(" " + target), `after the edit: '${after}'`);
  await client.delete(`/edits/${edit.id}`);
  const undone = await complete(model);
  must(undone === before, `after undo: '${undone}' vs '${before}'`);

  let refused = false;
  try { await client.completions.create({ model, prompt, max_tokens: "x" }); }
  catch (e) { refused = e.status === 400 && /max_tokens/.test(e.message); }
  must(refused, "a bad max_tokens should be a 400 the client reports");
  console.log(`openai client: before '${before}', after edit '${after}', after undo '${undone}'`);
})().catch((e) => { console.error("FAIL: " + (e.stack || e)); process.exit(1); });
