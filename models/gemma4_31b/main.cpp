// gemma4_31b_runner: generate text from a Gemma 4 / Gemma 3 .pte made by models.gemma4_31b.export.
// Build: make gemma4_31b-xnnpack (see runners/README.md).
#include "zoo/cli.h"

int main(int argc, char** argv) {
  zoo::CliOptions o;
  zoo::ArgParser args("gemma4_31b_runner", "Generate text with a Gemma 4 / Gemma 3 .pte (zoo contract) on ExecuTorch.");
  zoo::add_standard_options(args, o, "gemma4_31b");
  if (int status = args.parse(argc, argv); status >= 0) return status;
  return zoo::run_cli(o, args);
}
