// qwen3_runner: generate text from a Qwen3 .pte made by models.qwen3.export.
// Build: make qwen3-xnnpack (see runners/README.md).
#include "zoo/cli.h"

int main(int argc, char** argv) {
  zoo::CliOptions o;
  zoo::ArgParser args("qwen3_runner", "Generate text with a Qwen3 .pte (zoo contract) on ExecuTorch.");
  zoo::add_standard_options(args, o, "qwen3");
  args.toggle("--enable-thinking", &o.enable_thinking, "with --chat: --no-enable-thinking adds Qwen3's empty think block");
  if (int status = args.parse(argc, argv); status >= 0) return status;
  return zoo::run_cli(o, args);
}
