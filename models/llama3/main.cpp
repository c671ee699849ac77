// llama3_runner: generate text from a Llama 3 family .pte (SmolLM2, Llama 3.x) made by models.llama3.export.
// Build: make llama3-xnnpack (see runners/README.md).
#include "zoo/cli.h"

int main(int argc, char** argv) {
  zoo::CliOptions o;
  zoo::ArgParser args("llama3_runner", "Generate text with a Llama 3 family .pte (zoo contract) on ExecuTorch.");
  zoo::add_standard_options(args, o, "llama3");
  if (int status = args.parse(argc, argv); status >= 0) return status;
  return zoo::run_cli(o, args);
}
