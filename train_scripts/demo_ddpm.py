"""Serve a DDPM pipeline (a folder or a Hub repo) in the browser with Gradio: sampling with any sampler, a
sample emerging from noise (Fig. 6), interpolation (Fig. 8) and the model's facts.

    python train_scripts/demo_ddpm.py --model ddpm-digits                  # the default job's output
    python train_scripts/demo_ddpm.py --model google/ddpm-cifar10-32 --server_port 7861 --share

Needs the `demo` extra (`pip install "ddpm_hf[demo]"`); the app is `ddpm_hf.tools.demo.build_demo`. A model
that cannot be loaded is an error before the server listens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import HfArgumentParser

from ddpm_hf.tools.cli import configure_logging, usage_errors
from ddpm_hf.tools.demo import build_demo


@dataclass
class DemoArguments:
    model: str = field(metadata={"help": "A pipeline folder or a Hub repo id (`name` or `namespace/name`)."})
    revision: str | None = field(default=None, metadata={"help": "The repo's branch, tag or commit."})
    server_name: str = field(
        default="127.0.0.1", metadata={"help": "The address to listen on (0.0.0.0: every interface), as gradio's."}
    )
    server_port: int | None = field(
        default=None, metadata={"help": "The port; default: gradio's (7860, or the next free one)."}
    )
    share: bool = field(default=False, metadata={"help": "Also serve through a public gradio.live link."})


def main(argv: list[str] | None = None) -> None:
    configure_logging()
    with usage_errors():
        (args,) = HfArgumentParser(DemoArguments, description=__doc__).parse_args_into_dataclasses(args=argv)
        demo = build_demo(args.model, args.revision)
    demo.launch(server_name=args.server_name, server_port=args.server_port, share=args.share)


if __name__ == "__main__":
    main()
