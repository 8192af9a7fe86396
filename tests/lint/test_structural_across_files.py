"""The structural rules (MG105 to MG109) across files: a helper in another file that does the
work, a builder inherited from a base class in another file; the cache re-checks a module when
the helper it calls changes."""

import os
import textwrap


from tests.lint.projects import check, write


ATTENTION_UTILS = """\
    import torch.nn.functional as F


    def pick_attention():
        def attend(q, k, v, mask, dropout_p):
            {decide}return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)

        return attend
"""

ATTENTION = """\
    from torch import nn

    from pkg.attention_utils import pick_attention


    class SelfAttention(nn.Module):
        def __init__(self, attn_dropout=0.1):
            super().__init__()
            self.attn_dropout = attn_dropout
            self._attention_call = pick_attention()

        def forward(self, q, k, v):
            return self._attention_call(q, k, v, mask=None, dropout_p=self.attn_dropout)
"""


def test_sdpa_dropout_through_a_helper_chosen_in_another_file(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/attention_utils.py": ATTENTION_UTILS.format(decide=""), "pkg/attention.py": ATTENTION})
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("pkg/attention.py", 13, "MG106")
    assert "dropout_p=self.attn_dropout" in message and "attention_utils.py:6" in message


def test_cache_rechecks_the_module_when_the_helper_starts_deciding(tmp_path):
    project, cache = tmp_path / "project", tmp_path / "cache"
    write(project, {"pkg/__init__.py": "", "pkg/attention_utils.py": ATTENTION_UTILS.format(decide=""), "pkg/attention.py": ATTENTION})
    assert [c for _, _, c, _ in check(project, cache)] == ["MG106"]
    decided = ATTENTION_UTILS.format(decide="dropout_p = 0.0 if mask is None else dropout_p\n            ")
    (project / "pkg/attention_utils.py").write_text(textwrap.dedent(decided))
    os.utime(project / "pkg/attention_utils.py", ns=(1, 1))
    assert check(project, cache) == []  # attention.py itself did not change


def test_modules_stored_in_a_plain_dict_by_a_builder_inherited_from_another_file(tmp_path):
    write(tmp_path, {
        "base.py": """\
            from torch import nn


            class Representation(nn.Module):
                pass


            class Model(nn.Module):
                def __init__(self):
                    super().__init__()
                    self.entities = self._build()

                def _build(self):
                    return nn.ModuleList([Representation()])
        """,
        "inductive.py": """\
            from typing import Mapping, Sequence

            from base import Model, Representation


            class InductiveModel(Model):
                by_mode: Mapping[str, Sequence[Representation]]

                def __init__(self):
                    super().__init__()
                    self.by_mode = {"training": self.entities}
                    self.by_mode["validation"] = validation = self._build()
                    self.by_mode["testing"] = validation
        """,
    })
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("inductive.py", 11, "MG107")
    assert "self._build(...) stored in it at line 12" in message


LIGHTNING_MODEL = """\
    import lightning.pytorch as pl
    import torch
    from torch import nn


    class LitModel(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))

        def export_onnx(self, path, **kwargs):
            sample = torch.zeros(1, 3, 32, 32)
            self(sample)
            self.to_onnx(path, sample, **kwargs)
"""

EXPORTER = """\
    from lit import LitModel


    class Exporter:
        def __init__(self, weights):
            self.module = LitModel()
            self.weights = weights

        def export(self, path):
            {before}self.module.export_onnx(path, opset_version=12)
"""


def test_lightning_to_onnx_on_a_module_an_exporter_class_built(tmp_path):
    write(tmp_path, {"lit.py": LIGHTNING_MODEL, "exporter.py": EXPORTER.format(before="")})
    [(path, row, code, message)] = check(tmp_path)
    assert (path, row, code) == ("lit.py", 14, "MG109")
    assert "exporter.py:10" in message and "LitModel() is built at" in message and "exporter.py:6" in message
    assert "dynamo=True since torch 2.9" in message and "forward in training mode at line 13" in message


def test_lightning_to_onnx_after_the_exporter_puts_the_module_in_eval_is_silent(tmp_path):
    write(tmp_path, {"lit.py": LIGHTNING_MODEL, "exporter.py": EXPORTER.format(before="self.module.eval()\n            ")})
    assert check(tmp_path) == []


LINEAR_LIST_BASE = """\
    from torch import nn


    class Base(nn.Module):
        def __init__(self):
            super().__init__()
            self.linears = [nn.Linear(10, 10)]
"""


def test_a_plain_list_in_a_class_nothing_runs_is_silent_until_a_subclass_in_another_file_runs_it(tmp_path):
    write(tmp_path, {"pkg/__init__.py": "", "pkg/base.py": LINEAR_LIST_BASE})
    assert check(tmp_path) == []
    write(tmp_path, {"pkg/net.py": "from pkg.base import Base\n\n\nclass Net(Base):\n    def forward(self, x):\n        return self.linears[0](x)\n"})
    [(path, row, code, _)] = check(tmp_path)
    assert (path, row, code) == ("pkg/base.py", 7, "MG107")
