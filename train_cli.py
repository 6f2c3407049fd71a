"""Training entry point: ``python train_cli.py fit --config asdzoo/configs/<system>.yaml`` (LightningCLI)."""

from lightning.pytorch.cli import LightningCLI


def main(args=None) -> None:
    LightningCLI(save_config_kwargs={"overwrite": True}, args=args)


if __name__ == "__main__":
    main()
