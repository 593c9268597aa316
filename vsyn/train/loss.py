"""The math of one critic step and one generator step; the loop never sees it (StyleGAN3's `loss.py` split).

Both critics live in one module (one optimizer, one engine). The critic step scores real and fake clips in one
forward of the *wrapped* critics (so DDP/ZeRO synchronise the gradients), then computes the penalty through the
*raw* module (autograd.grad through a DeepSpeed engine crashes; notes.md), and returns one scalar, because
one backward per engine step is all ZeRO-2 keeps.

Loss families (cfg.loss.kind):
- `wgan-gp` (the original): critic E[D(fake)] − E[D(real)] + λ_GP·GP per critic, GP every step with one α per
  sample (per frame for the spatial critic); generator −(λ_S·E[D_S] + λ_T·E[D_T]).
- `hinge` / `logistic` (non-saturating): lazy R1 on real clips every `r1_interval` critic steps, weighted
  γ/2 · interval.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import Tensor, nn

from vsyn import losses
from vsyn.config import Config
from vsyn.nn.input_grad import input_grad_convolutions
from vsyn.nn.motion import MotionFields, compose
from vsyn.nn.motion_encoder import kl_to_prior
from vsyn.train.randomness import StepRandom
from vsyn.train.runtime import Runtime

CRITIC_LOSSES = {
    "wgan-gp": losses.wgan_critic_loss,
    "hinge": losses.hinge_critic_loss,
    "logistic": losses.logistic_critic_loss,
}
GENERATOR_LOSSES = {
    "wgan-gp": losses.wgan_generator_loss,
    "hinge": losses.hinge_generator_loss,
    "logistic": losses.logistic_generator_loss,
}


@contextlib.contextmanager
def _penalty_mode(critics: nn.Module) -> Iterator[None]:
    """Penalty forwards run in eval mode: spectral norm then reuses the step's u, v instead of updating them in
    place a second time. Besides saving work, an in-place update after the compiled main forward saved those
    buffers breaks its backward under torch.compile. The critics have no other train/eval-dependent layer.

    Compiled blocks (train.compile) run eagerly here: a compiled graph's backward cannot be differentiated again.
    Convolutions record ∇x in a form whose double backward runs on ordinary kernels (vsyn.nn.input_grad); the
    plain form sent the penalty's weight gradient through cuDNN's slowest paths.
    """
    was_training = critics.training
    critics.eval()
    try:
        with torch.compiler.set_stance("force_eager"), input_grad_convolutions():
            yield
    finally:
        critics.train(was_training)


def motion_regularisers(fields: MotionFields) -> tuple[Tensor, Tensor]:
    """(total variation of the velocity, mean moving probability) of the motion head's latest G-step fields."""
    v = fields.velocity
    tv = (v[..., 1:, :] - v[..., :-1, :]).abs().mean() + (v[..., :, 1:] - v[..., :, :-1]).abs().mean()
    return tv, torch.sigmoid(fields.moving).mean()


DIVERSITY_EPS = 0.01  # bounds the term at λ/0.01 while the head still ignores its latent


def mode_seeking(fields: MotionFields, noise: Tensor) -> tuple[Tensor, Tensor]:
    """(λ-free loss, ratio) of MSGAN's mode-seeking term for a batch whose halves share photos: the velocity change
    per unit latent change between the two futures of each photo, and 1 / (ratio + eps) to minimise."""
    h = noise.shape[0] // 2
    v = fields.velocity.float()
    ratio = (v[:h] - v[h:]).abs().mean() / (noise[:h] - noise[h:]).float().abs().mean()
    return 1.0 / (ratio + DIVERSITY_EPS), ratio


def unmasked_l1(clips: Tensor, fields: MotionFields) -> Tensor:
    """L1 between the real clips' frames 1..T−1 and frame 0 warped by the first len(clips) videos' fields with the
    moving mask off. Where the mask is 0 the masked output is frame 0 whatever the velocity, so no loss on it teaches
    the velocity there; an untrained field warps worse than standing still, the mask shuts first, and the velocity
    never learns (every motion-head run before this term). This term trains the field everywhere, towards zero
    on the ground, so the mask can open where warping explains the clip."""
    r = clips.shape[0]
    mine = slice_fields(fields, 0, r)
    warped = compose(clips[:, 0], mine.offsets(), mine.blend, mine.appearance, torch.ones_like(mine.moving))
    return (warped - clips[:, 1:].float()).abs().mean()


def slice_fields(fields: MotionFields, start: int, stop: int | None = None) -> MotionFields:
    """The fields of videos start..stop−1 of a batch."""
    part = slice(start, stop)
    return MotionFields(fields.velocity[part], fields.moving[part], fields.blend[part], fields.appearance[part],
                        fields.kind)


class VideoGANLoss:
    def __init__(self, cfg: Config, runtime: Runtime) -> None:
        self.cfg, self.rt = cfg, runtime
        self.kind = cfg.loss.kind
        self.k = cfg.model.spatial_frames
        self.frames = cfg.model.frames
        self.lam_s, self.lam_t = cfg.loss.spatial_weight, cfg.loss.temporal_weight
        # loop steps (critic and generator) over the warm-up: kimg counts the critic's clips, n_critic steps a cycle
        cycle = cfg.train.n_critic + 1
        self.warmup_steps = round(cfg.loss.adversarial_warmup_kimg * 1000 / cfg.train.batch / cfg.train.n_critic * cycle)

    # ---- G forward, shared by both phases
    def generate(
        self, real: Tensor, rnd: StepRandom, *, grad: bool, noise: Tensor | None = None, encode: Tensor | None = None
    ) -> Tensor:
        """Fake clips conditioned on the real clips' frame 0. Without `grad` no G graph is built (critic steps).
        `encode`: the first rows' real clips, whose latents the motion encoder infers (loss.reconstruction)."""
        g = self.rt.generator if grad else self.rt.raw_generator
        if noise is None:
            noise = rnd.noise(self.rt.raw_generator)
        extra = {} if encode is None else {"encode": encode}
        with torch.set_grad_enabled(grad), self.rt.autocast():
            return g(real[:, 0], num_frames=real.shape[1], noise=noise, **extra)

    # ---- phases
    def critic_step_loss(self, real: Tensor, rnd: StepRandom, critic_step: int) -> tuple[Tensor, dict[str, Tensor]]:
        """One scalar: D-real + D-fake (+ penalty) for both critics. real: float (B,T,3,H,W) in [0,1]."""
        fake = self.generate(real, rnd, grad=False).float()
        idx = rnd.frame_indices(self.frames, self.k)
        b = real.shape[0]
        with self.rt.autocast():
            s, t = self.rt.critics(torch.cat([real, fake]), idx)
        s, t = s.float(), t.float()  # loss reductions in fp32 even when the critics ran in bf16
        crit = CRITIC_LOSSES[self.kind]
        loss_s, loss_t = crit(s[:b], s[b:]), crit(t[:b], t[b:])
        loss = loss_s + loss_t
        stats = {"D/loss_spatial": loss_s.detach(), "D/loss_temporal": loss_t.detach()}
        if self.kind == "wgan-gp":
            stats["D/wdist_spatial"] = (s[:b].mean() - s[b:].mean()).detach().float()
            stats["D/wdist_temporal"] = (t[:b].mean() - t[b:].mean()).detach().float()
            gp_s, gp_t = self.gradient_penalty(real, fake, idx, rnd)
            loss = loss + self.cfg.loss.gp_weight * (gp_s + gp_t)
            stats |= {"D/gp_spatial": gp_s.detach(), "D/gp_temporal": gp_t.detach()}
        elif self.cfg.loss.r1_gamma > 0 and critic_step % self.cfg.loss.r1_interval == 0:
            r1_s, r1_t = self.r1_penalty(real, idx)
            loss = loss + (self.cfg.loss.r1_gamma / 2) * self.cfg.loss.r1_interval * (r1_s + r1_t)
            stats |= {"D/r1_spatial": r1_s.detach(), "D/r1_temporal": r1_t.detach()}
        stats["D/loss"] = loss.detach()
        return loss, stats

    def generator_step_loss(self, real: Tensor, rnd: StepRandom) -> tuple[Tensor, dict[str, Tensor]]:
        """λ_S·L(D_S(fake)) + λ_T·L(D_T(fake)); the critics are the raw module and frozen by the caller.
        With loss.motion_diversity the batch's first half of photos is shown twice, with different latents."""
        diversity, rec = self.cfg.loss.motion_diversity, self.cfg.loss.reconstruction
        clips = real
        noise = rnd.noise(self.rt.raw_generator)
        if diversity:
            h = real.shape[0] // 2
            real = torch.cat([real[:h], real[:h]])
        if rec:  # one forward: the clips regenerated from their own latents, then the critics' batch
            eps = rnd.noise(self.rt.raw_generator)
            both = self.generate(torch.cat([clips, real]), rnd, grad=True, noise=torch.cat([eps, noise]), encode=clips)
            regenerated, fake = both[: clips.shape[0]], both[clips.shape[0] :]
        else:
            fake = self.generate(real, rnd, grad=True, noise=noise)
        idx = rnd.frame_indices(self.frames, self.k)
        with self.rt.autocast():
            s, t = self.rt.raw_critics(fake, idx)
        s, t = s.float(), t.float()
        gen = GENERATOR_LOSSES[self.kind]
        loss_s, loss_t = gen(s), gen(t)
        loss = self.lam_s * loss_s + self.lam_t * loss_t
        stats = {"G/loss_spatial": loss_s.detach(), "G/loss_temporal": loss_t.detach()}
        if self.cfg.loss.adversarial_warmup_kimg:
            weight = rnd.ramp(self.warmup_steps)
            loss = weight * loss
            stats["G/adversarial_weight"] = weight.detach().float()
        fields = getattr(self.rt.raw_generator, "last_fields", None)
        if rec:
            target = clips[:, 1:].float()
            l1 = (regenerated[:, 1:].float() - target).abs().mean()
            kl = kl_to_prior(*self.rt.raw_generator.last_posterior)
            loss = loss + rec * l1 + self.cfg.loss.kl * kl
            still = (clips[:, :1].float() - target).abs().mean()  # "copy frame 0" on the same clips: the reference
            stats |= {"G/reconstruction_l1": l1.detach(), "G/reconstruction_l1_still": still.detach(),
                      "G/kl": kl.detach()}
            if fields is not None:
                free = unmasked_l1(clips, fields)
                loss = loss + rec * free
                stats["G/reconstruction_l1_unmasked"] = free.detach()
        if fields is not None and rec:  # the regularisers and the diversity pairs read the critics' batch
            fields = slice_fields(fields, clips.shape[0])
        if fields is not None and (self.cfg.loss.motion_smooth or self.cfg.loss.motion_still):
            smooth, still = motion_regularisers(fields)
            loss = loss + self.cfg.loss.motion_smooth * smooth + self.cfg.loss.motion_still * still
            stats |= {"G/motion_smooth": smooth.detach(), "G/motion_still": still.detach()}
        if fields is not None and diversity:
            seek, ratio = mode_seeking(fields, noise)
            loss = loss + diversity * seek
            stats |= {"G/motion_diversity": ratio.detach()}
        return loss, {"G/loss": loss.detach(), **stats}

    # ---- penalties: raw module, per-sample, fp32 unless loss.penalty_precision=autocast
    def _penalty_autocast(self) -> contextlib.AbstractContextManager:
        return self.rt.autocast(enabled=self.cfg.loss.penalty_precision == "autocast")

    def gradient_penalty(self, real: Tensor, fake: Tensor, idx: Tensor, rnd: StepRandom) -> tuple[Tensor, Tensor]:
        critics = self.rt.raw_critics
        cond = real[:, 0]
        a_s = rnd.uniform(self.k)[:, :, None, None, None]  # one α per (clip, frame)
        frames = (a_s * real[:, idx] + (1 - a_s) * fake[:, idx]).detach().requires_grad_(True)
        a_t = rnd.uniform()[:, None, None, None, None]  # one α per clip
        video = (a_t * real + (1 - a_t) * fake).detach().requires_grad_(True)
        with self._penalty_autocast(), _penalty_mode(critics):
            gp_s = losses.gradient_penalty(critics.spatial(frames, cond), frames, batch_dims=2)
            gp_t = losses.gradient_penalty(critics.temporal(video), video, batch_dims=1)
        return gp_s, gp_t

    def r1_penalty(self, real: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
        critics = self.rt.raw_critics
        frames = real[:, idx].detach().requires_grad_(True)
        video = real.detach().requires_grad_(True)
        with self._penalty_autocast(), _penalty_mode(critics):
            r1_s = losses.r1_penalty(critics.spatial(frames, real[:, 0]), frames, batch_dims=2)
            r1_t = losses.r1_penalty(critics.temporal(video), video, batch_dims=1)
        return r1_s, r1_t
