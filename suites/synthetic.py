"""The synthetic PMI suite: how close is each head's similarity to the true PMI?

Why the default world (suites/synthetic.yaml) looks as it does, from KME-CLIP's assumptions
(docs/heads.md; the world, its modes and its metrics: docs/protocol.md):
* image and text are conditionally independent given a topic: the condition under which the
  InfoNCE optimum exp PMI is an inner product that a kernel mean embedding can represent;
* topics are sparse, overlapping mixtures of shared concepts (Dirichlet 0.5 over 16 concepts) and
  an input shows only 4 noisy draws, so the posterior p(z | x) is often spread over several
  topics (mean posterior entropy 0.64 nats; Bayes accuracy 0.76): the multi-modal case in which one
  pooled vector (cosine) is predicted to fall short;
* mode ``posterior``: a head is shown the exact log posterior (and each draw's own), so the encoder
  has no inference to do and heads differ by what their similarity can express;
* heads embed into 4 dimensions (``head_defaults``), half the 8 topics: the regime the theory is
  about (a CLIP embeds into 512 dimensions far more concepts than that), where a single inner
  product cannot hold exp PMI and a log inner product of kernel mean embeddings can.
Per the theory, kme_proto should beat its own cosine control (proto_cosine) and cosine, and
kme_rbf should beat cosine; kme_rff should tie kme_rbf where its features approximate the kernel.
Nothing here is tuned to make a head win; the measured gaps are reported as they come out
(README, "The synthetic suite"), and ``run_bench.py sweep`` draws them against out_dim and topics.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bench.core.errors import ConfigError
from bench.eval import metrics, uncertainty
from bench.eval.scoring import encode, score_matrices, score_matrix
from suites.base import (
    Evaluation,
    PointSets,
    ReportTable,
    SealedTest,
    Suite,
    SuiteData,
    ValidationSpec,
    register_suite,
)
from suites.synthetic_world import MODES, World

RETRIEVAL = {f"{d}_retrieval_recall@{k}": True for d in ("image", "text") for k in (1, 5, 10)}


@dataclass
class SyntheticTest:
    pairs: PointSets
    pmi: torch.Tensor  # [n, n] true PMI, float64
    topics: torch.Tensor  # [n] topic of each test image
    prompts: torch.Tensor  # [K * prompts_per_class, p, d], class-major
    log_posterior: torch.Tensor  # [n, K] exact log p(z | x) of each test image
    bayes_accuracy: float
    n_classes: int
    prompts_per_class: int


@dataclass
class SyntheticValidation:
    pairs: PointSets
    optimum: float  # the true PMI's symmetric InfoNCE on these pairs: validation excess = head's - this


VALIDATION_STREAM = 2**62  # the validation sample's generator is seeded world_seed + this: its own stream


@register_suite("synthetic")
class SyntheticSuite(Suite):
    version = 3  # 2: world modes, posterior by default, heads at out_dim 4; 3: a validation sample
    validation = ValidationSpec("infonce_excess", higher_is_better=False, tolerance=0.01)
    description = "Generated topic world with known PMI; seconds on a CPU; the suite CI regresses on."
    main_metric = "infonce_excess"
    metrics = {
        "infonce_excess": False,
        "pmi_row_kl": False,
        "pmi_pearson": True,
        "pmi_spearman": True,
        "pmi_rmse": False,
        **RETRIEVAL,
        "zeroshot_acc1": True,
        "zeroshot_vs_bayes": True,
    }
    headline_metrics = ("pmi_pearson", "pmi_spearman", "zeroshot_vs_bayes")
    report_tables = (
        ReportTable(
            "similarity against the true PMI",
            (
                ("InfoNCE excess", "infonce_excess"),
                ("row KL", "pmi_row_kl"),
                ("Pearson", "pmi_pearson"),
                ("Spearman", "pmi_spearman"),
                ("RMSE", "pmi_rmse"),
            ),
            "InfoNCE excess: the head's symmetric InfoNCE on the test matrix minus the true PMI's (0 is optimal); "
            "row KL: KL from the PMI's row softmax to the head's; Pearson, Spearman, RMSE (after the best constant) "
            "against PMI over all test pairs. InfoNCE excess and row KL measure the distance from the InfoNCE optimum; "
            "under train.loss: siglip heads are not trained towards it.",
        ),
        ReportTable(
            "retrieval (each item's own partner is the positive)",
            tuple(
                [(f"I→T R@{k}", f"text_retrieval_recall@{k}") for k in (1, 5, 10)]
                + [(f"T→I R@{k}", f"image_retrieval_recall@{k}") for k in (1, 5, 10)]
            ),
            "I→T: an image queries the texts; T→I: a text queries the images. Many items share a topic, so even "
            "the oracle's recall is low.",
        ),
        ReportTable(
            "zero-shot classification of topics",
            (("acc@1", "zeroshot_acc1"), ("vs Bayes", "zeroshot_vs_bayes")),
            "vs Bayes: accuracy divided by the Bayes classifier's.",
        ),
    )
    defaults_file = "synthetic.yaml"
    reference_names = ("oracle",)
    head_defaults = {"out_dim": 4}  # below the 8 topics: see the module's docstring
    repeat_params = ("world_seed",)  # a repeat draws a new world: the seed alone moves results ~0.0003

    @classmethod
    def check_params(cls, params: dict, train: dict) -> None:
        p = params
        rules = [
            ("mode", p["mode"] in MODES, f"one of {', '.join(MODES)}"),
            ("topics", p["topics"] >= 2, "an integer >= 2 (zero-shot needs two classes)"),
            ("concepts", p["concepts"] >= 1, "an integer >= 1"),
            ("dim", p["dim"] >= 1, "an integer >= 1"),
            ("points", p["points"] >= 1, "an integer >= 1"),
            ("noise", p["noise"] > 0, "a number > 0"),
            ("centre_scale", p["centre_scale"] > 0, "a number > 0"),
            ("prior_concentration", p["prior_concentration"] > 0, "a number > 0"),
            ("topic_concentration", p["topic_concentration"] > 0, "a number > 0"),
            ("bend", 0 <= p["bend"] < 1, "a number in [0, 1) (the bend must stay invertible)"),
            ("test_pairs", p["test_pairs"] >= 10, "an integer >= 10 (recall@10 needs ten candidates)"),
            ("prompts_per_class", p["prompts_per_class"] >= 1, "an integer >= 1"),
            ("validation_pairs", p["validation_pairs"] >= 10, "an integer >= 10"),
            ("world_seed", 0 <= p["world_seed"] < 2**63 - 1, "an integer in [0, 2^63 - 1)"),
            (
                "train_pairs",
                p["train_pairs"] >= train["batch_size"],
                f"an integer >= train.batch_size ({train['batch_size']}): a batch is drawn from the training pairs",
            ),
        ]
        for key, ok, allowed in rules:
            if not ok:
                raise ConfigError(
                    f"suites.synthetic.{key} = {p[key]!r} is out of range: it must be {allowed}. "
                    f"The default is in suites/synthetic.yaml."
                )

    def world(self) -> World:
        p = self.params
        return World(
            p["topics"],
            p["concepts"],
            p["dim"],
            p["points"],
            p["noise"],
            p["centre_scale"],
            p["prior_concentration"],
            p["topic_concentration"],
            p["bend"],
            p["world_seed"],
            p["mode"],
        )

    def build(self, seed: int, with_test: bool = True) -> SuiteData:
        p, world = self.params, self.world()
        # The world's own seed, not the run seed, draws the data: every head and every run sees
        # the same training pairs and the same test set.
        g = torch.Generator().manual_seed(int(p["world_seed"]) + 1)
        z = world.sample_topics(p["train_pairs"], g)
        train = PointSets(world.sample(z, "image", g).points, world.sample(z, "text", g).points)
        validation = self.validation_sample(world)
        if not with_test:  # the test sample is drawn after the training pairs, from the same stream: not drawn
            identity = {"world_seed": p["world_seed"], "mode": p["mode"], "validation_pairs": p["validation_pairs"]}
            return SuiteData(train, world.point_dim, world.point_dim, SealedTest(self.name), identity, validation)
        zt = world.sample_topics(p["test_pairs"], g)
        img, txt = world.sample(zt, "image", g), world.sample(zt, "text", g)
        post_img = world.log_posterior(img.raw, "image")
        post_txt = world.log_posterior(txt.raw, "text")
        classes = torch.arange(world.n_topics).repeat_interleave(p["prompts_per_class"])
        prompts = world.sample(classes, "text", g).points
        test = SyntheticTest(
            pairs=PointSets(img.points, txt.points),
            pmi=world.pmi(post_img, post_txt),
            topics=zt,
            prompts=prompts,
            log_posterior=post_img,
            bayes_accuracy=float((post_img.argmax(1) == zt).double().mean()),
            n_classes=world.n_topics,
            prompts_per_class=p["prompts_per_class"],
        )
        identity = {
            "world_seed": p["world_seed"],
            "mode": p["mode"],
            "test_pairs": p["test_pairs"],
            "bayes_accuracy": test.bayes_accuracy,
            "validation_pairs": p["validation_pairs"],
        }
        return SuiteData(train, world.point_dim, world.point_dim, test, identity, validation)

    def validation_sample(self, world: World) -> SyntheticValidation:
        """Pairs of the same world from a stream of their own, so drawing them moves no training or test draw."""
        g = torch.Generator().manual_seed(int(self.params["world_seed"]) + VALIDATION_STREAM)
        z = world.sample_topics(self.params["validation_pairs"], g)
        img, txt = world.sample(z, "image", g), world.sample(z, "text", g)
        pmi = world.pmi(world.log_posterior(img.raw, "image"), world.log_posterior(txt.raw, "text"))
        return SyntheticValidation(PointSets(img.points, txt.points), float(metrics.symmetric_infonce(pmi.double())))

    def validate(self, head, data: SuiteData, device) -> float:
        v: SyntheticValidation = data.validation
        img = encode(head, "image", v.pairs.images, None, device)
        txt = encode(head, "text", v.pairs.texts, None, device)
        i2t, t2i = score_matrices(head, img, txt, len(v.pairs), len(v.pairs))
        return float(metrics.symmetric_infonce(i2t.double(), t2i.double())) - v.optimum

    def _metrics(
        self, scores: torch.Tensor, class_scores: torch.Tensor, test: SyntheticTest, t2i: torch.Tensor | None = None
    ) -> Evaluation:
        """``scores`` is the image-query (i2t) matrix; ``t2i`` the text-query one when a head scores the
        directions differently (FILIP). InfoNCE and retrieval take each direction from its own matrix, the
        row KL (image rows) from i2t, and Pearson, Spearman and RMSE compare the mean of the two with PMI."""
        n = scores.shape[0]
        t2i = scores if t2i is None else t2i
        both = scores if t2i is scores else (scores.double() + t2i.double()) / 2
        out = {
            "infonce_excess": float(metrics.symmetric_infonce(scores.double(), t2i.double()))
            - float(metrics.symmetric_infonce(test.pmi.double())),
            "pmi_row_kl": metrics.row_kl(test.pmi, scores),
            "pmi_pearson": metrics.pearson(both, test.pmi),
            "pmi_spearman": metrics.spearman(both, test.pmi),
            "pmi_rmse": metrics.centred_rmse(both, test.pmi),
        }
        out.update(metrics.retrieval_recalls(scores, torch.eye(n, dtype=torch.bool, device=scores.device), t2i=t2i))
        acc = metrics.topk_accuracy(class_scores, test.topics.to(class_scores.device), ks=(1,))[1]
        out["zeroshot_acc1"] = acc
        out["zeroshot_vs_bayes"] = acc / test.bayes_accuracy
        return Evaluation(out, self._outcomes(scores, t2i, class_scores, test), self._spec(test))

    @staticmethod
    def _outcomes(scores: torch.Tensor, t2i: torch.Tensor, class_scores: torch.Tensor, test: SyntheticTest) -> dict:
        """Per test item: its share of InfoNCE excess and of the row KL, its ranks both ways, and the rank
        of its true topic; Pearson, Spearman and RMSE over all pairs have no per-item form."""
        n = scores.shape[0]
        eye = torch.eye(n, dtype=torch.bool)
        truth = torch.zeros_like(class_scores, dtype=torch.bool)
        truth[torch.arange(n), test.topics.to(class_scores.device)] = True
        out = {
            "item/infonce_excess": (metrics.infonce_terms(scores, t2i) - metrics.infonce_terms(test.pmi)).numpy(),
            "item/row_kl": metrics.row_kl_terms(test.pmi, scores).numpy(),
        }
        out.update({f"i2t/{k}": v for k, v in uncertainty.rank_outcomes(scores, eye).items()})
        out.update({f"t2i/{k}": v for k, v in uncertainty.rank_outcomes(t2i.T, eye).items()})
        out.update({f"zs/{k}": v for k, v in uncertainty.rank_outcomes(class_scores.cpu(), truth.cpu()).items()})
        return out

    @staticmethod
    def _spec(test: SyntheticTest) -> dict:
        return {
            "infonce_excess": {"kind": "mean", "values": "item/infonce_excess"},
            "pmi_row_kl": {"kind": "mean", "values": "item/row_kl"},
            **{f"text_retrieval_recall@{k}": {"kind": "hit", "query": "i2t", "k": k} for k in (1, 5, 10)},
            **{f"image_retrieval_recall@{k}": {"kind": "hit", "query": "t2i", "k": k} for k in (1, 5, 10)},
            "zeroshot_acc1": {"kind": "hit", "query": "zs", "k": 1},
            "zeroshot_vs_bayes": {"kind": "scaled", "of": "zeroshot_acc1", "by": 1 / test.bayes_accuracy},
        }

    def evaluate(self, head, data: SuiteData, device) -> dict[str, float]:
        test: SyntheticTest = data.test
        head.eval()
        img = encode(head, "image", test.pairs.images, None, device)
        txt = encode(head, "text", test.pairs.texts, None, device)
        i2t, t2i = (m.cpu() for m in score_matrices(head, img, txt, len(test.pairs), len(test.pairs)))
        classes = head.combine_prompts(
            encode(head, "text", test.prompts, None, device), test.n_classes, test.prompts_per_class
        )
        class_scores = score_matrix(head, img, classes, len(test.pairs), test.n_classes).cpu()
        return self._metrics(i2t, class_scores, test, t2i)

    def diagnostic_points(self, data: SuiteData, n: int = 256):
        return data.test.pairs.images[:n], data.test.pairs.texts[:n]

    def references(self, data: SuiteData) -> dict[str, dict[str, float]]:
        """The oracle scores with the true PMI, and classifies with the exact posterior."""
        test: SyntheticTest = data.test
        # The Bayes rule argmax_z p(z|x) is the zero-shot ceiling (argmax_z PMI would divide by p(z)).
        return {"oracle": self._metrics(test.pmi, test.log_posterior, test)}
