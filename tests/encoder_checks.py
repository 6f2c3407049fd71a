"""Checks shared by the encoder tests: padding invariance and LoRA training + merging."""

import torch


def assert_padding_invariant(enc, total: int = 24000, valid: int = 15000, atol: float = 1e-5) -> None:
    """A clip padded inside a batch has exactly the frames it has alone."""
    wave = torch.randn(2, total) * 0.1
    wave[1, valid:] = 0
    with torch.no_grad():
        frames, mask = enc(wave, torch.tensor([total, valid]))
        alone, _ = enc(wave[1:, :valid])
    n = alone.shape[1]
    assert mask[1].sum() == n and torch.allclose(frames[1, :n], alone[0], atol=atol)


def assert_lora_trains_and_merges(model, targets: list[str], wave: torch.Tensor, loss_fn, steps: int) -> None:
    """peft LoRA on ``targets``: only adapter weights train, the loss falls, merging keeps the outputs."""
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets))
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    opt = torch.optim.Adam([p for p in lora.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(steps):
        loss = loss_fn(lora(wave)[0])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0], losses
    lora.eval()
    with torch.no_grad():
        before = lora(wave)[0]
        merged = lora.merge_and_unload()
        assert not any("lora_" in n for n, _ in merged.named_parameters())
        assert torch.allclose(merged(wave)[0], before, atol=1e-4)
