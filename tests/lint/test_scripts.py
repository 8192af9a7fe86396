"""MG101 on scripts: module-level models that the script's own helpers run (issue 9, the
`scripts and module-level models` group of missed bugs), with the path as evidence, and the
shapes where staying silent is right."""

from pathlib import Path


from tests.lint.projects import check as check_project, write


def check(root: Path, files: dict[str, str]):
    write(root, files)
    return check_project(root)


FEATURES = """\
    import torch
    from torch import nn
    from torchvision import models

    net = models.googlenet(weights="DEFAULT").cuda()
    {switch}features = nn.Sequential(*list(net.children())[:-2])


    def video_features(frames):
        return [features(frame.unsqueeze(0)).squeeze().detach() for frame in frames]


    def build(paths):
        {setup}return [video_features(read_video(p)) for p in paths]


    if __name__ == "__main__":
        build(sys.argv[1:])
"""


def test_module_level_backbone_run_by_a_helper(tmp_path):
    [(path, row, code, message)] = check(tmp_path, {"make_dataset.py": FEATURES.format(switch="", setup="")})
    assert (path, row, code) == ("make_dataset.py", 10, "MG101")
    # the evidence: which helper, the top-level call that reaches it, where the model was built
    assert "video_features() runs the module-level features" in message
    assert "make_dataset.py:18" in message and "googlenet() is built at" in message and "make_dataset.py:5" in message


def test_backbone_switched_to_eval_before_or_after_the_cut_is_silent(tmp_path):
    assert check(tmp_path, {"make_dataset.py": FEATURES.format(switch="net.eval()\n    ", setup="")}) == []
    assert check(tmp_path, {"make_dataset.py": FEATURES.format(switch="", setup="features.eval()\n        ")}) == []


def test_helper_called_only_from_another_file_is_silent(tmp_path):
    # nothing in this file's top level runs the helper: the importer owns the mode
    source = FEATURES.format(switch="", setup="").split('if __name__')[0]
    assert check(tmp_path, {"make_dataset.py": source, "run.py": "from make_dataset import build\n"}) == []


def test_capitalised_model_name_is_a_forward_not_a_constructor(tmp_path):
    demo = """\
        import torch
        from edges import EdgeNet

        Premodel = EdgeNet().cuda(0)
        Premodel.load_state_dict(torch.load("edges.pth", weights_only=True))
        for frame in frames:
            lines = Premodel(frame)
    """
    edges = """\
        import torch.nn as nn


        class EdgeNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.bn = nn.BatchNorm2d(3)
    """
    [(path, row, code, message)] = check(tmp_path, {"demo.py": demo, "edges.py": edges})
    assert (path, row, code) == ("demo.py", 7, "MG101")
    assert "EdgeNet() is built at" in message and "restored or pretrained weights" in message


def test_a_model_chosen_by_name_from_torchvision(tmp_path):
    script = """\
        import torch
        from torchvision import models


        def main(args):
            model = models.__dict__[args.arch](pretrained=True).to(args.device)
            {switch}scores = model(load_image(args.img))
            return extractor(scores.argmax().item(), scores)  # a CAM needs the gradients: no no_grad
    """
    [(_, row, code, message)] = check(tmp_path, {"cam.py": script.format(switch="")})
    assert (row, code) == (7, "MG101") and "models.__dict__[args.arch]() builds a torchvision/timm model" in message
    assert check(tmp_path, {"cam.py": script.format(switch="model.eval()\n            ")}) == []


def test_training_script_samples_from_its_module_level_generator_silently(tmp_path):
    gan = """\
        import torch
        from nets import Generator

        generator = Generator()
        generator.load_state_dict(torch.load("g.pth", weights_only=True))


        def sample_images(n):
            save_image(generator(noise(n)))


        for real in loader:
            loss_fn(generator(noise(8)), real).backward()
            opt.step()
            sample_images(8)
    """
    nets = "import torch.nn as nn\n\n\nclass Generator(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.5)\n"
    assert check(tmp_path, {"gan.py": gan, "nets.py": nets}) == []


LOADER = """\
    import torch
    import torchvision


    class NetLoader:
        def __init__(self, path):
            self.model = torchvision.models.alexnet()
            self.model.load_state_dict(torch.load(path, weights_only=True))
            {switch}self.layers = {{"conv1": 1, "conv2": 4}}
"""

TRUNCATE = """\
    import copy

    from torch import nn


    def truncate(net, layer):
        if layer.startswith("conv"):
            return nn.Sequential(*list(net.children())[:2])
        cut = copy.deepcopy(net)
        cut.classifier = nn.Identity()
        return cut
"""

ACTIVATION = """\
    from loaders import NetLoader
    from models import truncate


    def activation(images, path, layer):
        loader = NetLoader(path)
        part = truncate(loader.model, layer)
        return [part(x).detach() for x in images]
"""


def test_truncated_model_from_a_loader_class(tmp_path):
    files = {"loaders.py": LOADER.format(switch=""), "models.py": TRUNCATE, "analyzer.py": ACTIVATION}
    [(path, row, code, message)] = check(tmp_path, files)
    assert (path, row, code) == ("analyzer.py", 8, "MG101")
    assert "truncate() at" in message and "returns modules of loader.model" in message
    assert "NetLoader() built at" in message and "alexnet() is built at" in message


def test_loader_class_that_switches_its_model_to_eval_is_silent(tmp_path):
    files = {"loaders.py": LOADER.format(switch="self.model.eval()\n            "), "models.py": TRUNCATE, "analyzer.py": ACTIVATION}
    assert check(tmp_path, files) == []


def test_helper_that_may_return_a_model_of_its_own_is_not_followed(tmp_path):
    own = TRUNCATE.replace("import copy", "import torchvision").replace("copy.deepcopy(net)", "torchvision.models.vgg11()")
    files = {"loaders.py": LOADER.format(switch=""), "models.py": own, "analyzer.py": ACTIVATION}
    assert check(tmp_path, files) == []
