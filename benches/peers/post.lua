-- wrk request for benches/peers.sh: one chat completion, as an OpenAI SDK would send it.
-- BENCH_KIND=json asks for a plain chat.completion; BENCH_KIND=sse asks for a stream
-- ("stream":true plus accept: text/event-stream, which is what the upstream switches on).
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
local question = "Hello there, how are you today? Please answer in one short sentence."
if os.getenv("BENCH_KIND") == "sse" then
  wrk.headers["accept"] = "text/event-stream"
  wrk.body = '{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},'
    .. '"messages":[{"role":"user","content":"' .. question .. '"}]}'
else
  wrk.headers["accept"] = "application/json"
  wrk.body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"' .. question .. '"}]}'
end
