// llama3_runner: generate text from a Llama 3 family .pte (SmolLM2, Llama 3.x) exported with --no-custom-ops.
// Build: make llama3-xnnpack (see runners/README.md).
#include "zoo/cli.h"

int main(int argc, char** argv) {
  zoo::CliOptions o;
  o.prompt = "The capital of France is";
  zoo::ArgParser args("llama3_runner", "Generate text with a Llama 3 family .pte (zoo contract) on ExecuTorch.");
  args.option("--model", &o.model, "FILE.pte", "exported .pte (models.llama3.export --no-custom-ops)");
  args.option("--tokenizer", &o.tokenizer, "FILE", "tokenizer.json or its directory (default: beside the .pte)");
  args.option("--prompt", &o.prompt, "TEXT", "prompt text (default: \"The capital of France is\")");
  args.option("--prompt-file", &o.prompt_file, "FILE", "read the prompt from a file (instead of --prompt)");
  args.flag("--chat", &o.chat, "wrap the prompt in the model's ChatML chat template");
  args.option("--system", &o.system, "TEXT", "system message (with --chat)");
  args.option("--max-new-tokens", &o.max_new_tokens, "N", "most tokens to generate (default 64)");
  args.option("--temperature", &o.temperature, "T", "0 = greedy (default)");
  args.option("--top-p", &o.top_p, "P", "nucleus sampling mass (default 1 = off)");
  args.option("--top-k", &o.top_k, "K", "keep the K likeliest tokens (default 0 = off)");
  args.option("--seed", &o.seed, "S", "sampling seed (default 0)");
  args.flag("--tokenize-only", &o.tokenize_only, "print the prompt's token ids and exit");
  args.flag("--print-ids", &o.print_ids, "print the generated token ids instead of text");
  args.flag("--verbose", &o.verbose, "show ExecuTorch's log lines");
  if (int status = args.parse(argc, argv); status >= 0) return status;
  return zoo::run_cli(o, args);
}
