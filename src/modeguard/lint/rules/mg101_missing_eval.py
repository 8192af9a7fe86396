import ast
import dataclasses
import re
import weakref

from modeguard.lint.context import compatible, condition_holds, dotted_name
from modeguard.lint.models import MODEL_NAME_RE, NOT_TRAINED_RE
from modeguard.lint.project import NO_MODE_LAYERS, _argument_for, _neutral, short_path, related
from modeguard.lint.project import pytest_file
from modeguard.lint.rule import Rule

INFERENCE_FUNC_RE = re.compile(r"^(evaluate|eval|predict|test|validate|validation|infer|inference|run_inference|run_eval|evaluation)(_|$)", re.I)
FRAMEWORK_HOOK_RE = re.compile(r"(_step$|_step_end$|^on_|_epoch_end$)")  # Lightning hooks
EVAL_LOADER_RE = re.compile(r"(test|val|valid|eval|dev|holdout)", re.I)
GRADIENT_INSPECTION_RE = re.compile(r"(gradient|saliency|attribution|grad_cam|explain|interpret)", re.I)
CALIBRATION_RE = re.compile(r"(calibrat|update_bn|running stat)", re.I)
RECALIBRATION_RE = re.compile(r"(recalib|calibrat|update_bn|bn_stat|batch ?norm|\bbn\b|mc.?dropout|monte|mc_|dropout)", re.I)


class MissingEval(Rule):
    code = "MG101"
    name = "missing-eval"
    summary = "A model is used for inference without `.eval()` on that path"
    rationale = (
        "In training mode Dropout drops and BatchNorm normalizes with the statistics of the "
        "current batch, so predictions are random and depend on the rest of the batch. "
        "`torch.no_grad()`/`inference_mode()` do not change the mode. Call `model.eval()` "
        "(or use `modeguard.evaluating(model)`) before inference."
    )
    triggers = ("no_grad", "inference_mode", "backward", "eval", "test", "pred", "infer", "valid", "load", "pretrained", "weights", "generate", "sample")
    invalid = (
        # a warm-up forward on zeros after restoring weights: BatchNorm statistics move towards the zeros
        "def load(path):\n    model = Net()\n    model.load_state_dict(torch.load(path, weights_only=True))\n"
        "    with torch.no_grad():\n        model(torch.zeros(1, 3, 224, 224))\n    return model\n",
        "model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 2))\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    preds = model(test_x)\n",
        "model = Net()\nmodel.load_state_dict(torch.load('ckpt.pt', weights_only=True))\nwith torch.no_grad():\n    preds = model(images)\n",
        "@torch.no_grad()\ndef predict(path):\n    net = ResNet()\n    net.load_state_dict(torch.load(path, weights_only=True))\n    return net(load_image())\n",
        "def main():\n    model = Net()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n    with torch.no_grad():\n        print(model(test_x))\n",
        "def evaluate(model, loader):\n    with torch.no_grad():\n        return [model(x) for x in loader]\n\n\ndef main():\n    model = Net()\n    evaluate(model, loader)\n",
        "model = Net()\nmodel.train()\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    print(model(test_x))\n",
        # an evaluator class holding the model, built with a model in training mode
        "class Predictor:\n    def __init__(self, model):\n        self.model = model\n\n    def __call__(self, x):\n"
        "        with torch.no_grad():\n            return self.model(x)\n\n\nnet = Net()\npredict = Predictor(net)\nprint(predict(x))\n",
        # the same progress plot of a caller's model that has Dropout
        "class Classifier(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.hidden = nn.Linear(2, 4)\n"
        "        self.drop = nn.Dropout(0.5)\n        self.out = nn.Linear(4, 1)\n\n    def forward(self, x):\n"
        "        return self.out(self.drop(torch.tanh(self.hidden(x))))\n\n\n"
        "@torch.no_grad()\ndef plot(model, grid):\n    return model(grid)\n\n\n"
        "def train(model, loader):\n    model.train()\n    for epoch in range(10):\n        for x, y in loader:\n"
        "            loss_fn(model(x), y).backward()\n            opt.step()\n        plot(model, grid)\n\n\n"
        "model = Classifier().to(device)\ntrain(model, loader)\n",
        # repeated sampling of a model the training loop left in training mode: its own noise, plus dropout by accident
        "class Runner:\n    def train(self):\n        self.net.train()\n        for x, y in self.loader:\n"
        "            loss_fn(self.net(x), y).backward()\n            self.opt.step()\n        self.test()\n\n"
        "    @torch.no_grad()\n    def test(self):\n        samples = []\n        for i in range(20):\n"
        "            samples.append(self.net.forward(self.test_x, sample=True))\n        return torch.stack(samples).min(0)\n",
        # a loop over batches is not repeated sampling
        "net = Net()\nfor x, y in loader:\n    loss_fn(net(x), y).backward()\n    opt.step()\nwith torch.no_grad():\n"
        "    for i in range(len(test_x)):\n        batch = test_x[i]\n        print(net(batch))\n",
        # last mode wins: train() after loading a checkpoint in a function that only predicts
        "def predict(path, x):\n    model = Net()\n    model.load_state_dict(torch.load(path, weights_only=True))\n"
        "    model.eval()\n    model.train()\n    with torch.no_grad():\n        return model(x)\n",
        # aliases and spellings: .cuda().half() and model.forward(x)
        "m = Net().cuda().half()\nm.load_state_dict(torch.load(p, weights_only=True))\nout = m.forward(x)\n",
        # a test loop after the training loop, without no_grad
        "def main():\n    model = Net()\n    for x, y in train_loader:\n        loss_fn(model(x), y).backward()\n        optimizer.step()\n"
        "    for x, y in test_loader:\n        print(model(x).argmax(1))\n",
        # a predictor built right after a trainer's train(model, data, ...) put the model back in training mode
        "class Trainer:\n    def train(self, model, data, epochs=1):\n        for x, y in data:\n            loss_fn(model(x), y).backward()\n"
        "        model.eval()\n        model.train(mode=True)\n\n\nclass Predictor:\n    def __init__(self, model):\n        self.model = model\n\n"
        "    def predict(self, x):\n        return self.model(x)\n\n\nnet = Net()\nnet.load_state_dict(torch.load(p, weights_only=True))\nnet.eval()\n"
        "trainer = Trainer()\ntrainer.train(net, data, epochs=2)\n"
        "print(Predictor(net).predict(x))\n",
        # an OpenMMLab detector built, given weights by load_checkpoint, run through its wrapper
        "from mmdet.models import build_detector\nfrom mmcv.runner import load_checkpoint\nfrom mmcv.parallel import MMDataParallel\n\n"
        "model = build_detector(cfg.model)\nload_checkpoint(model, cfg.load_from)\nwrapped = MMDataParallel(model.cuda())\n"
        "with torch.no_grad():\n    result = wrapped(return_loss=False, **data)\n",
        # a deployment wrapper whose loader builds the model by a classmethod factory and restores its weights
        "class Net(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.drop = nn.Dropout(0.5)\n\n"
        "    @classmethod\n    def from_config(cls, cfg):\n        return cls()\n\n\nclass Deployment:\n    def __init__(self, cfg, state):\n"
        "        self.model = self._load_model(cfg, state)\n\n    def _load_model(self, cfg, state):\n        model = Net.from_config(cfg)\n"
        "        model.load_state_dict(state)\n        return model\n\n    def _run(self, data):\n        return self.model(data)\n",
        # a wrapper that runs its caller's model and never calls eval(), while a sibling wrapper does
        "class Retriever:\n    pass\n\n\nclass HubRetriever(Retriever):\n    def __init__(self, name):\n"
        "        self.model = AutoModel.from_pretrained(name).eval()\n\n\nclass ModelRetriever(Retriever):\n    def __init__(self, model):\n"
        "        self.model = model\n\n    def embed(self, batch):\n        with torch.no_grad():\n            return self.model(**batch)\n",
        # the class's own factory puts the model in eval mode; built directly, the predictor never does
        "class Predictor:\n    def __init__(self, model, reader):\n        self._model = model\n        self._reader = reader\n\n"
        "    def predict_instance(self, instance):\n        return self._model.forward_on_instance(instance)\n\n    @classmethod\n"
        "    def from_archive(cls, archive):\n        model = archive.model\n        model.eval()\n        return cls(model, archive.reader)\n",
        # a class that trains its model in one method and samples from it in another
        "class Synth:\n    def fit(self, data):\n        self.generator = Generator()\n        for x in data:\n"
        "            self.generator(x).mean().backward()\n\n    def sample(self, n):\n        return self.generator(noise(n))\n",
        # a test batch drawn every 10 iterations inside the training loop, in training mode
        "model = Net()\nfor i, (x, y) in enumerate(train_loader):\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "    if i % 10 == 0:\n        tx, ty = next(iter(test_loader))\n        print(loss_fn(model(tx), ty).item())\n",
        # one step function for every phase: train() unconditional, backward() only for 'train'
        "def run_batch(model, x, y, phase):\n    model.train()\n    loss = loss_fn(model(x), y)\n    if phase == 'train':\n"
        "        loss.backward()\n        optimizer.step()\n    return loss.item()\n",
        # a library's evaluation function paired with its training function, which leaves the model training
        "def mlp_train(model, loader, optimizer):\n    model.train()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n"
        "        optimizer.step()\n    return model\n\n\ndef mlp_test(model, loader):\n    return [model(x).argmax(1) for x in loader]\n",
        # a base class runs the policy for rollouts; its subclass trains it; nobody calls eval()
        "class Algorithm:\n    def collect(self, obs):\n        with torch.no_grad():\n            return self.policy(obs)\n\n\n"
        "class PPO(Algorithm):\n    def __init__(self):\n        self.policy = Policy()\n"
        "        self.optimizer = torch.optim.Adam(self.policy.parameters())\n\n    def update(self, batch):\n"
        "        self.policy(batch).mean().backward()\n        self.optimizer.step()\n",
        # a script's module-level model under a capitalised name, restored and run per frame
        "Premodel = EdgeNet().cuda(0)\nPremodel.load_state_dict(torch.load(path, weights_only=True))\n"
        "for frame in frames:\n    edges = Premodel(frame)\n",
        # a module-level pretrained backbone cut with nn.Sequential(children()), run by a helper the script calls
        "from torchvision import models\n\nnet = models.googlenet(weights='DEFAULT').cuda()\n"
        "features = nn.Sequential(*list(net.children())[:-2])\n\n\ndef encode(frames):\n"
        "    return [features(f).detach() for f in frames]\n\n\nif __name__ == '__main__':\n    encode(read_frames())\n",
        # a torchvision model picked by name, with pretrained weights
        "from torchvision import models\n\nmodel = models.__dict__[args.arch](pretrained=True).to(device)\nscores = model(image)\n",
        # a pretrained module that restores its own weights in __init__; its own predict() runs it
        "class Tagger(nn.Module):\n    def __init__(self, path):\n        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))\n"
        "        self.load_state_dict(torch.load(path, weights_only=True))\n\n    def forward(self, x):\n        return self.net(x)\n\n"
        "    @torch.no_grad()\n    def predict(self, x):\n        return self(x).argmax(1)\n",
        # its loader builds cls() and restores the weights without eval(); predict() runs self
        "class Policy(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 2))\n\n"
        "    @classmethod\n    def load(cls, path):\n        policy = cls()\n"
        "        policy.load_state_dict(torch.load(path, weights_only=True))\n        return policy\n\n"
        "    def predict(self, obs):\n        with torch.no_grad():\n            return self.net(obs)\n",
        # a generator built from layers its caller passes (BatchNorm2d among them), trained in fit()
        "class Generator(nn.Module):\n    def __init__(self, layers):\n        super().__init__()\n        self.seq = nn.Sequential(*layers)\n\n\n"
        "class Synth:\n    def fit(self, data):\n        self.generator = Generator(make_layers())\n        for x in data:\n"
        "            self.generator(x).mean().backward()\n\n    def sample(self, n):\n        return self.generator(noise(n))\n",
        # the same factory building BatchNorm2d
        "def conv_norm_relu(c_in, c_out):\n    return nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.BatchNorm2d(c_out), nn.ReLU())\n\n\n"
        "class Generator(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.body = conv_norm_relu(3, 64)\n\n"
        "    def forward(self, x):\n        return self.body(x)\n\n\ngenerator = Generator()\nfor real in loader:\n"
        "    loss_fn(generator(real), real).backward()\n    opt.step()\nwith torch.no_grad():\n    fake = generator(noise)\n",
        # a class whose Dropout and BatchNorm its arguments switch on: this call switches them on
        "class Gnn(nn.Module):\n    def __init__(self, dim, dropout=0.0, norm=None):\n        super().__init__()\n"
        "        self.drop = nn.Dropout(dropout)\n        self.norm = nn.BatchNorm1d(dim) if norm is not None else nn.Identity()\n\n\n"
        "model = Gnn(16, dropout=0.5)\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "with torch.no_grad():\n    print(model(test_x))\n",
        # the same class, its dropout chosen at run time: it may be on
        "class Gnn(nn.Module):\n    def __init__(self, dim, dropout=0.0):\n        super().__init__()\n        self.drop = nn.Dropout(p=dropout)\n\n\n"
        "model = Gnn(16, dropout=args.dropout)\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "with torch.no_grad():\n    print(model(test_x))\n",
    )
    valid = (
        # Monte-Carlo dropout: train() on purpose, the same input sampled repeatedly
        "net = nn.Sequential(nn.Dropout(0.05), nn.Linear(1, 20), nn.ReLU(), nn.Linear(20, 1))\n"
        "for x, y in loader:\n    loss_fn(net(x), y).backward()\n    opt.step()\nnet.eval()\nprint(net(grid))\n"
        "net.train()\nsamples = []\nwith torch.no_grad():\n    for t in range(100):\n        samples.append(net(grid))\n"
        "spread = torch.stack(samples).std(0)\n",
        # progress plots inside the training loop, of a model the caller built from Linear layers only
        "class Classifier(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.hidden = nn.Linear(2, 4)\n"
        "        self.out = nn.Linear(4, 1)\n\n    def forward(self, x):\n        return self.out(torch.tanh(self.hidden(x)))\n\n\n"
        "@torch.no_grad()\ndef plot(model, grid):\n    return model(grid)\n\n\n"
        "def train(model, loader):\n    model.train()\n    for epoch in range(10):\n        for x, y in loader:\n"
        "            loss_fn(model(x), y).backward()\n            opt.step()\n        plot(model, grid)\n\n\n"
        "model = Classifier().to(device)\ntrain(model, loader)\n",
        # Dropout and BatchNorm only by its arguments, which this call leaves at their defaults (p=0.0 is the identity, no norm)
        "def make_norm(kind, dim):\n    if kind is None:\n        return None\n    return nn.BatchNorm1d(dim)\n\n\n"
        "class Gnn(nn.Module):\n    def __init__(self, dim, layers, dropout=0.0, norm=None):\n        super().__init__()\n"
        "        self.drop = nn.Dropout(p=dropout)\n        self.norm = make_norm(norm, dim) or nn.Identity()\n"
        "        if norm is not None:\n            self.extra = nn.BatchNorm1d(dim)\n\n\n"
        "class Gcn(Gnn):\n    def forward(self, x):\n        return self.drop(self.norm(x))\n\n\n"
        "model = Gcn(args.dim, args.layers)\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "with torch.no_grad():\n    print(model(test_x))\n",
        # a layer factory that builds only mode-free torch layers (InstanceNorm without running statistics)
        "def conv_norm_relu(c_in, c_out):\n    return nn.Sequential(nn.Conv2d(c_in, c_out, 3), nn.InstanceNorm2d(c_out), nn.ReLU())\n\n\n"
        "class Generator(nn.Module):\n    def __init__(self):\n        super().__init__()\n        self.body = conv_norm_relu(3, 64)\n\n"
        "    def forward(self, x):\n        return self.body(x)\n\n\ngenerator = Generator()\nfor real in loader:\n"
        "    loss_fn(generator(real), real).backward()\n    opt.step()\nwith torch.no_grad():\n    fake = generator(noise)\n",
        # a subclass of a library's trainer (skorch's NeuralNet): its inherited predict() may switch the mode
        "import skorch\n\n\nclass Seq2Seq(skorch.NeuralNet):\n    def train_step(self, x, y):\n        self.module_.train()\n"
        "        loss = self.get_loss(self.infer(x), y)\n        loss.backward()\n        self.optimizer_.step()\n        return loss\n\n"
        "    def infer(self, x):\n        return self.module_(x)\n",
        # a scikit-learn probe on frozen features: its classes are not torch modules
        "from sklearn.linear_model import SGDClassifier\nfrom sklearn.multioutput import MultiOutputClassifier\n\n\n"
        "@torch.no_grad()\ndef probe(train_x, train_y, test_x):\n    clf = MultiOutputClassifier(SGDClassifier())\n"
        "    clf.fit(train_x, train_y)\n    return clf.predict(test_x)\n",
        # a shape check on a made-up input: not inference on data
        "def test():\n    net = ResNet18()\n    y = net(torch.randn(1, 3, 32, 32))\n    print(y.size())\n",
        "def calibrated_net():\n    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8))\n    with torch.no_grad():\n        model(torch.randn(64, 4))  # fills the running statistics\n    return model\n\n\nnet = calibrated_net()\n",
        "model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))  # nothing depends on the mode\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\nwith torch.no_grad():\n    preds = model(test_x)\n",
        "model = Net()\nmodel.load_state_dict(torch.load('ckpt.pt', weights_only=True))\nmodel.eval()\nwith torch.no_grad():\n    preds = model(images)\n",
        "def evaluate(model, loader):\n    with torch.no_grad():\n        return [model(x) for x in loader]\n\n\ndef main():\n    model = Net()\n    model.eval()\n    evaluate(model, loader)\n",
        "def evaluate(model, loader):  # called from elsewhere: the caller owns the mode\n    with torch.no_grad():\n        return [model(x) for x in loader]\n",
        "class Trainer:\n    def val_start(self):\n        self.model.eval()\n\n    def validate(self, loader):\n        self.val_start()\n        with torch.no_grad():\n            return [self.model(x) for x in loader]\n",
        "class Lit(pl.LightningModule):\n    def validation_step(self, batch, idx):\n        return self.model(batch)\n",
        "model = AutoModel.from_pretrained('bert-base-uncased')\nwith torch.no_grad():\n    out = model(**inputs)\n",
        "with torch.no_grad():\n    for p, ema_p in zip(model.parameters(), ema.parameters()):\n        ema_p.mul_(0.99).add_(p, alpha=0.01)\n",
        "model.train()  # recalibrate BatchNorm: batch statistics on purpose\nwith torch.no_grad():\n    for x in loader:\n        model(x)\n",
        "def test_model_shapes():\n    model = Net()\n    with torch.no_grad():\n        assert model(x).shape == (2, 10)\n",
        # GAN progress samples inside the training loop: bookkeeping, not inference
        "for epoch in range(5):\n    for real in loader:\n        loss_fn(netD(real), netD(netG(noise()))).backward()\n"
        "        opt_d.step()\n        with torch.no_grad():\n            fake = netG(fixed_noise)\n",
        # gradient accumulation: features cached under no_grad, then the backward in an inner loop
        "model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))\nfor x, y in loader:\n    if accum == 1:\n        loss_fn(model(x), y).backward()\n    else:\n"
        "        with torch.no_grad():\n            cached = model(x)\n        for j in range(accum):\n"
        "            loss_fn(model(x[j]), cached).backward()\n    optimizer.step()\n",
        # the forward in the branch where the model's own flag says eval mode
        "def forward_scores(model, x):\n    if model.training:\n        return model(x)\n    else:\n        with torch.no_grad():\n            return model(x)\n\n\n"
        "def main():\n    net = Net()\n    if not net.training:\n        with torch.no_grad():\n            print(net(x))\n    forward_scores(net, x)\n",
        # the backbone switched to eval after it was cut: nn.Sequential(children()) shares its modules
        "from torchvision import models\n\nnet = models.googlenet(weights='DEFAULT').cuda()\n"
        "features = nn.Sequential(*list(net.children())[:-2])\nnet.eval()\n\n\ndef encode(frames):\n"
        "    return [features(f).detach() for f in frames]\n\n\nif __name__ == '__main__':\n    encode(read_frames())\n",
        # a module-level model that the script trains: its helper's samples are bookkeeping
        "generator = Generator()\n\n\ndef sample_images(n):\n    save_image(generator(noise(n)))\n\n\n"
        "for real in loader:\n    loss_fn(generator(noise(8)), real).backward()\n    opt.step()\n    sample_images(8)\n",
        # a model without Dropout or BatchNorm: its mode changes nothing
        "model = nn.Linear(4, 2)\nfor x, y in loader:\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "with torch.no_grad():\n    print(model(test_x))\n",
        # the mode chosen by a parameter: the eval() branch is the evaluation path
        "def run(model, loader, train):\n    model.train() if train else model.eval()\n    with torch.set_grad_enabled(train):\n"
        "        return [model(x) for x in loader]\n\n\nmodel = Net()\nrun(model, loader, train=False)\n",
        # the predictor's model is put in eval mode after the predictor is built
        "class Predictor:\n    def __init__(self, model):\n        self.model = model\n\n    def predict(self, x):\n        return self.model(x)\n\n\n"
        "net = Net()\nfor x, y in data:\n    loss_fn(net(x), y).backward()\npredictor = Predictor(net)\nnet.eval()\nprint(predictor.predict(x))\n",
        # modes switched through getattr(self, name) over the modules the class holds (skorch)
        "class NeuralNet:\n    def fit(self, data):\n        self.module_ = Net()\n        self.optimizer_ = SGD(self.module_.parameters())\n        self._set_training(True)\n        for x, y in data:\n"
        "            loss_fn(self.module_(x), y).backward()\n\n    def _set_training(self, training):\n        for name in self._modules:\n"
        "            module = getattr(self, name + '_')\n            module.train(training)\n\n    def infer(self, x):\n"
        "        return self.module_(x)\n\n    def evaluation_step(self, x, training=False):\n        self._set_training(training)\n"
        "        return self.infer(x)\n",
        # a wrapper holding its caller's model, and no sibling that owns its model's mode
        "class Retriever:\n    pass\n\n\nclass ModelRetriever(Retriever):\n    def __init__(self, model):\n        self.model = model\n\n"
        "    def embed(self, batch):\n        with torch.no_grad():\n            return self.model(**batch)\n",
        # a trainer's train() leaves the model training, but the model has no Dropout/BatchNorm
        "class Trainer:\n    def train(self, model, data, epochs=1):\n        for x, y in data:\n            loss_fn(model(x), y).backward()\n"
        "        model.eval()\n        model.train()\n\n\nnet = nn.Sequential(nn.Linear(4, 2))\ntrainer = Trainer()\n"
        "trainer.train(net, data, epochs=2)\nwith torch.no_grad():\n    print(net(x))\n",
        # backward() for input gradients (saliency) does not train the caller's model
        "class Interpreter:\n    def __init__(self, model):\n        self.model = model\n\n    def saliency_gradients(self, x):\n"
        "        x.requires_grad_()\n        self.model(x).sum().backward()\n        return x.grad\n\n    def predict(self, x):\n"
        "        with torch.no_grad():\n            return self.model(x)\n",
        # a helper whose forward is the training step (its caller runs backward() on the result)
        "class Exp:\n    def _step(self, x):\n        return self.model(x)\n\n    def load(self, p):\n"
        "        self.model.load_state_dict(torch.load(p, weights_only=True))\n\n    def train(self, loader):\n"
        "        self.model.train()\n        for x in loader:\n            loss = self._step(x)\n            loss.backward()\n",
        # the periodic test batch evaluated in eval mode, training mode restored after it
        "model = Net()\nfor i, (x, y) in enumerate(train_loader):\n    loss_fn(model(x), y).backward()\n    optimizer.step()\n"
        "    if i % 10 == 0:\n        model.eval()\n        tx, ty = next(iter(test_loader))\n        with torch.no_grad():\n"
        "            print(model(tx).argmax(1))\n        model.train()\n",
        # a batch from the validation loader that is trained on (meta-learning): not inference
        "model = Net()\nfor x, y in train_loader:\n    loss_fn(model(x), y).backward()\n    vx, vy = next(val_iter)\n"
        "    loss_fn(model(vx), vy).backward()\n    optimizer.step()\n",
        # the mode follows the phase parameter
        "def run_batch(model, x, y, phase):\n    model.train(phase == 'train')\n    loss = loss_fn(model(x), y)\n    if phase == 'train':\n"
        "        loss.backward()\n        optimizer.step()\n    return loss.item()\n",
        # every caller passes the training phase: the backward() branch is always taken
        "def run_batch(model, x, y, phase):\n    model.train()\n    loss = loss_fn(model(x), y)\n    if phase == 'train':\n"
        "        loss.backward()\n    return loss\n\n\nmodel = Net()\nfor x, y in loader:\n    run_batch(model, x, y, 'train')\n",
        # the evaluation function of the pair switches to eval itself
        "def mlp_train(model, loader, optimizer):\n    model.train()\n    for x, y in loader:\n        loss_fn(model(x), y).backward()\n"
        "        optimizer.step()\n    return model\n\n\ndef mlp_test(model, loader):\n    model.eval()\n    return [model(x).argmax(1) for x in loader]\n",
        # the algorithm family switches the policy's mode through its own method
        "class Algorithm:\n    def collect(self, obs):\n        self.policy.set_training_mode(False)\n        with torch.no_grad():\n"
        "            return self.policy(obs)\n\n\nclass PPO(Algorithm):\n    def __init__(self):\n        self.policy = Policy()\n"
        "        self.optimizer = torch.optim.Adam(self.policy.parameters())\n\n    def update(self, batch):\n"
        "        self.policy.set_training_mode(True)\n        self.policy(batch).mean().backward()\n        self.optimizer.step()\n",
        # a pretrained module that puts itself in eval mode once its weights are restored
        "class Tagger(nn.Module):\n    def __init__(self, path):\n        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))\n"
        "        self.load_state_dict(torch.load(path, weights_only=True))\n        self.eval()\n\n"
        "    @torch.no_grad()\n    def predict(self, x):\n        return self.net(x).argmax(1)\n",
        # Monte-Carlo dropout on purpose: train() first, in the method itself
        "class Tagger(nn.Module):\n    def __init__(self, path):\n        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))\n"
        "        self.load_state_dict(torch.load(path, weights_only=True))\n\n"
        "    @torch.no_grad()\n    def predict_samples(self, x, n):\n        self.train()\n        return [self.net(x) for _ in range(n)]\n",
        # a method named like evaluation whose result the training loop backpropagates
        "class Policy(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
        "        self.net = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.2), nn.Linear(8, 2))\n\n"
        "    @classmethod\n    def load(cls, path):\n        policy = cls()\n"
        "        policy.load_state_dict(torch.load(path, weights_only=True))\n        return policy\n\n"
        "    def evaluate_actions(self, obs):\n        return self.net(obs)\n\n\n"
        "def train(policy, batches, optimizer):\n    for obs in batches:\n        policy.evaluate_actions(obs).mean().backward()\n        optimizer.step()\n",
    )

    def check(self, ctx):
        project = ctx.project
        module = project.modules.get(ctx.path)
        if module is None:
            return
        nodes = {(site.node.lineno, site.node.col_offset): site.node for site in ctx.calls}
        summaries = [(func, scope, module.functions.get(_local(func, scope))) for func, scope in ctx.functions]
        summaries.append((None, None, module.module_level))
        loops = _loops_by_function(ctx)
        restored_by_class: dict[str, frozenset[str]] = {}
        for func, scope, fs in summaries:
            if fs is None or (scope is not None and self._skip_function(ctx, func, scope)):
                continue
            if not any(item.kind == "forward" or (item.kind == "call" and item.receiver.startswith("self:")) for item in fs.items):
                continue  # runs no model itself
            if scope is not None and scope.cls is None and func.name.startswith("test_") and not project.callers(fs):
                continue  # a test function pytest calls: it builds tiny models on purpose
            events = project.events(fs)
            reported = set()
            if fs.cls is not None and fs.cls not in restored_by_class:
                restored_by_class[fs.cls] = (_restored_attributes(project, module, fs.cls), _class_training(project, module, fs.cls))
            restored, (trained, helpers) = restored_by_class.get(fs.cls, (frozenset(), ({}, frozenset())))
            if fs.name in helpers:
                trained = {}  # part of the training itself
            fetches = _eval_batch_fetches(ctx, func)
            companion = _companion_training(module, fs)
            weighted = _restored_globals(project, fs)

            def weights(event, fs=fs):
                return project.weights_source(fs, event.receiver, event.line, event.col, event.conds)

            for site, reason in _inference_sites(
                fs, events, loops.get(id(func), []), nodes, restored, trained,
                fetches=fetches, project=project, companion=companion, restored_globals=weighted, weights=weights,
            ):
                receiver = site.receiver
                if receiver in reported or not self._model_receiver(ctx, project, receiver) or _not_a_module_branch(site, receiver) or _eval_branch(site, receiver):
                    continue
                if _shape_check(ctx, func, nodes[(site.line, site.col)], receiver):
                    continue
                mode, why = project.mode_at(fs, receiver, site.line, site.col, site.conds)
                if mode is None and receiver.startswith("self.") and fs.cls is not None:
                    # the class's own evidence first; wrappers' evidence only for plain inference
                    evidence = [_class_evidence, _subclass_evidence]
                    if reason in ("no-grad", "function"):
                        evidence += [_sibling_evidence, _factory_evidence]
                    for source in evidence:
                        mode, why = source(project, module, fs, receiver)
                        if mode is not None or why:
                            break
                if mode is None and companion is not None and receiver.split(".")[0] in fs.params and not project.callers(fs):
                    mode, why = _companion_mode(project, fs, companion[0], receiver)
                if mode != "train" or (
                    not reason.startswith(TRAINING_FUNCTION_REASONS)
                    and _recalibration(ctx, fs, events, site, receiver, loops.get(id(func), []), nodes[(site.line, site.col)])
                ):
                    continue
                reported.add(receiver)
                yield self.finding(
                    ctx,
                    nodes[(site.line, site.col)],
                    f"{receiver} runs inference ({_REASONS.get(reason, reason)}) in training mode: {why}; "
                    f"no {receiver}.eval() on that path, so Dropout and BatchNorm behave as in training",
                    f"call {receiver}.eval() first (torch.no_grad() does not change the mode)",
                )
        for (line, col), (receiver, entry, why) in _own_inference(project, ctx.path).items():
            if (line, col) in nodes:
                yield self.finding(
                    ctx,
                    nodes[(line, col)],
                    f"{receiver} runs inference (in the module's own {entry}) in training mode: {why}; "
                    "no self.eval() on that path, so Dropout and BatchNorm behave as in training",
                    "call self.eval() in the inference method, or where the module restores its weights",
                )

    @staticmethod
    def _skip_function(ctx, func, scope) -> bool:
        name = func.name
        return (
            (name.startswith("test_") and pytest_file(ctx.path))
            or name in ("forward", "training_step")
            or FRAMEWORK_HOOK_RE.search(name) is not None
            or ctx.in_framework_class(scope)
            or ctx.is_module_class(scope.cls)
        )

    @staticmethod
    def _model_receiver(ctx, project, receiver) -> bool:
        """Not a frozen/teacher/EMA copy, not a function or class: a model instance (that it is
        a module in training mode is what the path evidence must show)."""
        frozen = project.frozen if "." in receiver else project.frozen_near(ctx.path)
        if NOT_TRAINED_RE.search(receiver) or receiver.split(".")[-1] in frozen:
            return False
        head = receiver.split(".")[0]
        return not (head in ctx.imports or (head != "self" and project.resolve(ctx.path, head) is not None))


def _not_a_module_branch(site, receiver) -> bool:
    """The `else` of `if isinstance(net, nn.Module)`: there the receiver is a plain function."""
    pattern = re.compile(rf"isinstance\(\s*{re.escape(receiver)}\s*,.*Module")
    return any(not taken and pattern.search(key) for key, taken, _ in site.conds)


def _eval_branch(site, receiver) -> bool:
    """Under `if not model.training:` (or the `else` of `if model.training:`) the model is in eval mode."""
    flag = f"{receiver}.training"
    return any((key == flag and not taken) or (key == f"not {flag}" and taken) for key, taken, _ in site.conds)


DUMMY_TENSOR_RE = re.compile(r"^torch\.(randn|rand|randint|zeros|ones|empty|full)(_like)?$")


def _assigned_values(func, name: str) -> list[ast.expr]:
    """The values `func` assigns to the plain name `name`."""
    return [a.value for a in ast.walk(func) if isinstance(a, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in a.targets)]


def _shape_check(ctx, func, call: ast.Call, receiver: str) -> bool:
    """A fresh model run on made-up tensors in the function that builds it, no weights loaded
    (`net = ResNet18(); net(torch.randn(1, 3, 32, 32))`): a shape check, not inference on data."""
    if func is None or "." in receiver:
        return False
    assigned = _assigned_values(func, receiver)
    if len(assigned) != 1 or not isinstance(assigned[0], ast.Call) or any(k.arg in ("pretrained", "weights") for k in assigned[0].keywords):
        return False
    if any(isinstance(n, ast.Attribute) and n.attr in ("load_state_dict", "load", "from_pretrained") for n in ast.walk(func)):
        return False

    def made_up(node) -> bool:
        if isinstance(node, ast.Call):
            return DUMMY_TENSOR_RE.match(ctx.qualname(node.func) or "") is not None
        if isinstance(node, ast.Name):
            values = _assigned_values(func, node.id)
            return len(values) == 1 and made_up(values[0])
        return False

    inputs = [*call.args, *(k.value for k in call.keywords)]
    return bool(inputs) and all(made_up(node) for node in inputs)


def _local(func, scope) -> str:
    return f"{scope.cls.name}.{func.name}" if scope.cls is not None else func.name


def _loops_by_function(ctx) -> dict[int, list]:
    found: dict[int, list] = {}
    for loop, scope in ctx.loops:
        found.setdefault(id(scope.func), []).append(loop)
    return found


def _restored_attributes(project, module, cls_name) -> frozenset[str]:
    """`self.x` into which some method of the class loads weights (a predictor's checkpoint)."""
    cls = module.classes.get(cls_name)
    found = set()
    for name in cls.methods if cls is not None else ():
        method = module.functions.get(f"{cls_name}.{name}")
        for item in method.items if method is not None else ():
            if item.kind == "load" and item.receiver and item.receiver.startswith("self."):
                found.add(item.receiver)
            elif item.kind == "assign" and item.receiver.startswith("self.") and (item.origin or "").endswith("+weights"):
                found.add(item.receiver)
            elif item.kind == "assign" and item.receiver.startswith("self.") and _restored_by_helper(project, method, item.origin or ""):
                found.add(item.receiver)
    return frozenset(found)


def _restored_by_helper(project, method, origin) -> bool:
    """`self.model = self._load_model(cfg, state_dict)`: a method of the class that loads
    weights into the model it returns."""
    found = project.own_method(method, origin[5:]) if origin.startswith("call:self.") else None
    helper = found[1] if found is not None and found[0] == "function" else None
    if helper is None:
        return False
    loaded = {item.receiver for item in helper.items if item.kind == "load" and item.receiver}
    return any(item.kind == "return" and (item.origin or "")[6:] in loaded for item in helper.items if (item.origin or "").startswith("alias:"))


def _class_training(project, module, cls_name):
    """`self.x` that a method of the class trains (forward with autograd on, then backward()),
    and the methods that training runs through."""
    cls = module.classes.get(cls_name)
    trained, helpers = {}, set()
    for name in cls.methods if cls is not None else ():
        method = module.functions.get(f"{cls_name}.{name}")
        if method is None:
            continue
        events = project.events(method)
        if not any(e.kind == "backward" and not e.grad_off for e in events) or _inspects_gradients(method):
            continue
        helpers.add(name)
        helpers.update(item.receiver[5:] for item in method.items if item.kind == "call" and item.receiver.startswith("self:"))
        for e in events:
            if e.kind == "forward" and not e.grad_off and e.receiver and e.receiver.startswith("self."):
                last = e.receiver.rsplit(".", 1)[-1]
                if last in project.trained or MODEL_NAME_RE.search(last):  # a model, not a callable attribute
                    trained.setdefault(e.receiver, name)
    return trained, frozenset(helpers)


def _restored_globals(project, fs) -> frozenset[str]:
    """Module-level models given weights at the top of `fs`'s file that `fs` uses as globals."""
    if fs.name == "<module>":
        return frozenset()
    return project.restored_globals(fs.path) - fs.local_names - set(fs.params)


def _inference_sites(
    fs, events, loops, nodes, restored=frozenset(), class_trained=None, *,
    fetches=(), project=None, companion=None, restored_globals=frozenset(), weights=None,
):
    """Direct forwards of `fs` that are inference: under no_grad/inference_mode, in an
    evaluation function, after load_state_dict, or after the training loop."""
    by_name = INFERENCE_FUNC_RE.match(fs.name) is not None
    backward = [e for e in events if e.kind == "backward" and not e.grad_off]
    # the loops that run backward() themselves, not only through a nested loop: an evaluation
    # after one of them (even inside the epoch loop) sees the model as training left it
    training_loops = [
        loop for loop in loops
        if any(
            _inside(loop, e) and not any(_contains(loop, other) and _inside(other, e) for other in loops)
            for e in backward
        )
    ]
    trains = bool(backward)
    for event in events:
        if event.kind != "forward" or event.via is not None or event.receiver is None:
            continue
        if (event.line, event.col) not in nodes:
            continue
        position = (event.line, event.col)
        if trains:
            # a training function: its no_grad forwards inside the loop are bookkeeping (GAN
            # samples, targets); only what runs after the training loop is inference
            if any(_inside(loop, event) for loop in training_loops):
                fetch = _test_batch(event, fetches, backward, training_loops)
                if fetch is not None:
                    yield event, f"on a test batch (next({fetch[2]}) at line {fetch[0]}) inside the training loop, no backward() after it"
                continue
            gate = _phase_gate(fs, event, events, backward, project)
            if gate is not None:
                yield gate
                continue
            if not any((e.line, e.col) < position for e in backward):
                continue
            if event.grad_off:
                yield event, "after-training"
            elif any(_inside(loop, event) and _evaluation_loop(loop) for loop in loops):
                yield event, "test-loop"
            continue
        if event.grad_off:
            yield event, "no-grad"
        elif by_name:
            yield event, "function"
        elif companion is not None and event.receiver.split(".")[0] in fs.params and not project.callers(fs):
            yield event, companion[1]
        elif any(_restores(e, event.receiver) and (e.line, e.col) < position for e in events):
            yield event, "restored"
        elif fs.name != "__init__" and any(related(event.receiver, r) for r in restored):
            yield event, "restored"
        elif class_trained and fs.name != "__init__" and event.receiver in class_trained:
            yield event, "after-fit"
        elif event.receiver.split(".", 1)[0] in restored_globals:
            yield event, "restored-global"
        elif weights is not None and fs.name != "__init__" and weights(event):
            yield event, "restored"


def _eval_batch_fetches(ctx, func) -> list[tuple[int, int, str]]:
    """`next(iter(test_loader))`, `next(enumerate(val_loader))`, `next(val_iter)` in `func`: a
    batch drawn from an evaluation loader, (line, col, loader)."""
    found = []
    for site in ctx.calls_in(func):
        call = site.node
        if isinstance(call.func, ast.Name) and call.func.id == "next" and call.args:
            loader = call.args[0]
            if isinstance(loader, ast.Call) and dotted_name(loader.func) in ("iter", "enumerate", "tqdm", "tqdm.tqdm") and loader.args:
                loader = loader.args[0]
            text = dotted_name(loader)
            if text is not None and EVAL_LOADER_RE.search(text.rsplit(".", 1)[-1]):
                found.append((call.lineno, call.col_offset, text))
    return found


def _test_batch(event, fetches, backward, training_loops):
    """A forward inside the training loop on a batch drawn from an evaluation loader after that
    iteration's backward(), with no backward() of its own: the periodic test batch (the fetch)."""
    position = (event.line, event.col)
    for loop in training_loops:
        if not _inside(loop, event):
            continue
        inside = [b for b in backward if _inside(loop, b)]
        for line, col, loader in fetches:
            fetch = (line, col)
            if (loop.lineno, loop.col_offset) <= fetch and fetch < position and any((b.line, b.col) < fetch for b in inside) and not any(
                b.line >= event.line and compatible(b.conds, event.conds) for b in inside  # `loss_fn(model(x)).backward()` starts first
            ):
                return line, col, loader
    return None


PHASE_PARAM_RE = re.compile(r"train", re.I)
# sites in a function that trains the model: its train() is for the backward(), not a recalibration
TRAINING_FUNCTION_REASONS = ("on a test batch", "for a phase other than training")


def _phase_gate(fs, event, events, backward, project):
    """A forward before a backward() that runs only for one value of a parameter
    (`if phase == 'train': loss.backward()`) while the forward runs for every value: on the
    other phase (validation) it is inference. Returns (the forward on that path, the reason)."""
    if not backward or event.grad_off:
        return None
    if any(e.kind == "train" and e.origin == "variable" and related(e.receiver, event.receiver) for e in events):
        return None  # `model.train(phase == "train")`: the mode follows the phase
    shared = set.intersection(*(set(b.conds) for b in backward))
    for key, taken, simple in sorted(shared, key=str):
        if simple is None or simple[0] not in fs.params or any(k == key for k, _, _ in event.conds):
            continue
        name, value, _ = simple
        if not ((isinstance(value, str) and PHASE_PARAM_RE.search(value)) or (value is True and PHASE_PARAM_RE.search(name))):
            continue  # not a training/validation switch
        if not any((b.line, b.col) > (event.line, event.col) for b in backward):
            continue
        if project is not None and _callers_always_train(project, fs, name, (key, taken, simple)):
            continue
        test = f"`{key}`" if taken else f"not `{key}`"
        other = dataclasses.replace(event, conds=(*event.conds, (key, not taken, simple)))
        return other, f"for a phase other than training: backward() runs only when {test}"
    return None


def _callers_always_train(project, fs, param, cond) -> bool:
    """Every project caller passes a constant for `param` that takes the backward() branch."""
    callers = project.callers(fs)
    if not callers:
        return False
    index = str(fs.params.index(param))
    for _, item in callers:
        constants = dict(item.constants)
        value = constants.get(param, constants.get(index, _MISSING))
        if value is _MISSING or condition_holds(cond, {param: value}) is not True:
            return False
    return True


_MISSING = object()
INFERENCE_TOKENS = frozenset(("test", "eval", "evaluate", "evaluation", "val", "valid", "validate", "validation", "predict", "infer", "inference"))


def _companion_training(module, fs):
    """The training function that pairs with an evaluation function by name in the same module
    or class (`dnn_train_model` for `dnn_test_model`, `train_epoch` for `valid_epoch`):
    (its summary, the reason text), or None."""
    tokens = fs.name.split("_")
    for i, token in enumerate(tokens):
        if token.lower() not in INFERENCE_TOKENS:
            continue
        for word in ("train", "training", "fit"):
            name = "_".join([*tokens[:i], word, *tokens[i + 1 :]])
            found = module.functions.get(f"{fs.cls}.{name}" if fs.cls else name)
            if found is not None and found is not fs:
                return found, f"in {fs.name}(), the evaluation counterpart of {found.name}() at {short_path(found.path)}:{found.line}"
    return None


def _companion_mode(project, fs, train_fs, receiver):
    """The mode in which the paired training function leaves the model it is given under the
    same parameter name: an evaluation API meant to run on what the training API returns."""
    head = receiver.split(".")[0]
    if head not in train_fs.params:
        return None, ""
    events = project.events(train_fs)
    if not any(e.kind == "backward" and not e.grad_off for e in events):
        return None, ""
    if not any(e.kind in ("forward", "train") and not e.grad_off and related(e.receiver, receiver) for e in events):
        return None, ""
    end = max((e.line for e in events), default=train_fs.line) + 1
    mode, why = project.mode_at(train_fs, receiver, end, 0)
    if mode != "train":
        return None, ""
    return "train", f"{train_fs.name}() leaves {receiver} in training mode ({why})"


def _restores(event, receiver) -> bool:
    """load_state_dict, torch.load or a constructor given pretrained weights."""
    if event.kind == "load":
        return related(event.receiver, receiver)
    origin = event.origin or ""
    return event.kind == "assign" and event.receiver == receiver and (origin.endswith("+weights") or origin == "built:torch.load")


def _contains(outer, inner) -> bool:
    return outer is not inner and (outer.lineno, outer.col_offset) <= (inner.lineno, inner.col_offset) and (
        (inner.end_lineno, inner.end_col_offset) <= (outer.end_lineno, outer.end_col_offset)
    )


def _inside(loop, event) -> bool:
    return (loop.lineno, loop.col_offset) <= (event.line, event.col) <= (loop.end_lineno, loop.end_col_offset)


def _evaluation_loop(loop) -> bool:
    target = getattr(loop, "iter", None)
    text = dotted_name(target.func if isinstance(target, ast.Call) else target) if target is not None else None
    if isinstance(target, ast.Call) and target.args and text in ("enumerate", "tqdm", "tqdm.tqdm", "iter", "zip"):
        text = dotted_name(target.args[0])
    return text is not None and EVAL_LOADER_RE.search(text.rsplit(".", 1)[-1]) is not None


def _class_evidence(project, module, fs, receiver):
    """An evaluator, predictor or agent class holding the model, no eval() of it in any method
    nor anywhere in the project on that name, and the evidence that it is in training mode:
    another method trains it, it is built in __init__, or the project builds the class with a
    model in training mode."""
    cls = module.classes.get(fs.cls)
    if cls is None or project.external_base(cls) is not None:
        return None, ""  # (inherited methods we cannot read may call eval())
    methods = [m for m in (module.functions.get(f"{cls.name}.{name}") for name in cls.methods) if m is not None]
    events = {m.name: project.events(m) for m in methods}
    if any(
        (e.kind == "eval" or (e.kind == "train" and e.origin == "variable")) and related(e.receiver, receiver)
        for found in events.values() for e in found
    ):
        return None, ""  # eval(), or train(flag), somewhere in the class
    for method in methods:
        for item in method.items:
            if item.kind == "assign" and item.receiver == receiver:
                mode, why = project.origin_mode(method, item.origin or "", f"{short_path(method.path)}:{item.line}", item, 0)
                if mode == "eval" or (mode is None and why.endswith(NO_MODE_LAYERS)):
                    return None, why  # built in eval mode, or without Dropout/BatchNorm
    for method in methods:
        found = events[method.name]
        backward = None if _inspects_gradients(method) else next((e for e in found if e.kind == "backward"), None)
        last = receiver.rsplit(".", 1)[-1]
        if backward is not None and method is not fs and (last in project.trained or MODEL_NAME_RE.search(last)) and any(
            e.kind in ("forward", "train") and not e.grad_off and e.receiver not in (None, "self") and related(e.receiver, receiver)
            for e in found
        ):
            return "train", (
                f"{method.name}() trains {receiver} (backward() at {short_path(method.path)}:{backward.line}) "
                f"and no method of {cls.name} calls {receiver}.eval()"
            )
    init = module.functions.get(f"{cls.name}.__init__")
    if init is None or receiver not in cls.model_attrs:
        return None, ""
    for item in init.items:
        if item.kind != "assign" or item.receiver != receiver:
            continue
        origin = item.origin or ""
        if not origin.startswith("alias:"):
            if receiver.rsplit(".", 1)[-1] in project.evaluated:
                return None, ""  # (an eval() of that name elsewhere in the project may be this model's)
            mode, why = project.origin_mode(init, origin, f"{short_path(init.path)}:{item.line}", item, 0)
            return (mode, f"{why}; no method of {cls.name} calls {receiver}.eval()") if mode == "train" else (None, "")
        param = origin[6:].split(".")[0]
        if param not in init.params:
            return None, ""
        for caller, call in project.class_constructions(cls):
            argument = _argument_for(init, call, param)
            if argument is None:
                continue
            mode, why = project.mode_at(caller, argument, call.line, call.col, call.conds)
            if mode == "train" and not _switched_after(project, caller, argument, call):
                return "train", (
                    f"{cls.name}({argument}) is built at {short_path(caller.path)}:{call.line} with {argument} in training mode "
                    f"({why}) and no method of {cls.name} calls eval() on it"
                )
    return None, ""


MODE_METHOD_RE = re.compile(r"^(set_)?(training_mode|train_mode|eval_mode|train|eval|mode)$")


def _subclass_evidence(project, module, fs, receiver):
    """A base class that runs inference on `self.x` while a subclass trains it (an algorithm
    base class whose `learn()` loop alternates rollouts and the subclass's `train()`), and no
    class of the family switches the mode of `self.x`: it is in training mode."""
    cls = module.classes.get(fs.cls)
    last = receiver.rsplit(".", 1)[-1]
    if cls is None or last in project.evaluated or not (last in project.trained or MODEL_NAME_RE.search(last)):
        return None, ""
    family = [cls, *project.subclasses(cls)]
    if len(family) == 1:
        return None, ""
    trainer = None
    for member in family:
        members = project.modules[member.path].functions
        for name in member.methods:
            method = members.get(f"{member.name}.{name}")
            if method is None:
                continue
            for item in method.items:
                if item.receiver == "self" and not project.is_module_class(member):
                    continue  # `self.train()` of an algorithm class: its own method, not Module.train
                if item.kind in ("eval", "train") and related(item.receiver, receiver):
                    return None, ""  # the family switches its mode somewhere
                if item.kind == "call" and (item.receiver or "").startswith(f"obj:{receiver}.") and MODE_METHOD_RE.search(item.receiver.rsplit(".", 1)[-1]):
                    return None, ""  # `self.policy.set_training_mode(False)`
            if trainer is None and member is not cls and _trains_attribute(project, method, receiver):
                trainer = method
    if trainer is None:
        return None, ""
    backward = next(e for e in project.events(trainer) if e.kind == "backward" and not e.grad_off)
    return "train", (
        f"{trainer.cls}.{trainer.name}() (a subclass of {cls.name}) trains {receiver} (backward() at "
        f"{short_path(trainer.path)}:{backward.line}) and no class of that family calls {receiver}.eval()"
    )


def _trains_attribute(project, method, receiver) -> bool:
    """backward() with autograd on, and `receiver` run (its forward or a method of it) or
    stepped (`self.policy.optimizer.step()`) with autograd on."""
    events = project.events(method)
    if not any(e.kind == "backward" and not e.grad_off for e in events):
        return False
    return any(
        not e.grad_off and (
            (e.kind == "forward" and related(e.receiver, receiver))
            or (e.kind == "step" and (e.receiver or "").startswith(receiver + "."))
            or (e.kind == "call" and (e.receiver or "").startswith(f"obj:{receiver}."))
        )
        for e in events
    )


def _inspects_gradients(method) -> bool:
    """A method that runs backward() for the input gradients (saliency, attributions), with no
    optimizer step: it does not train the model."""
    return GRADIENT_INSPECTION_RE.search(method.name) is not None and not any(item.kind == "step" for item in method.items)


def _passed_model(project, module, fs, receiver):
    """(class, __init__, parameter) when `receiver` is the model the caller hands to the class's
    constructor (`self.model = model`) and no method of the class switches its mode."""
    cls = module.classes.get(fs.cls)
    init = module.functions.get(f"{fs.cls}.__init__") if cls is not None else None
    if init is None or receiver.count(".") != 1:
        return None
    passed = [i for i in init.items if i.kind == "assign" and i.receiver == receiver and (i.origin or "").startswith("alias:")]
    if not passed or passed[0].origin[6:] not in init.params:
        return None
    methods = [m for m in (module.functions.get(f"{cls.name}.{name}") for name in cls.methods) if m is not None]
    if any(e.kind in ("eval", "train") and related(e.receiver, receiver) for m in methods for e in project.events(m)):
        return None
    return cls, init, passed[0].origin[6:]


def _factory_evidence(project, module, fs, receiver):
    """The class's own factory (a classmethod) puts the model in eval mode before building the
    class with it (`model.eval(); return cls(model, reader)`), its constructor never does: built
    directly, it runs its caller's model in whatever mode that model is in."""
    found = _passed_model(project, module, fs, receiver)
    if found is None:
        return None, ""
    cls, init, param = found
    for name in cls.methods:
        factory = module.functions.get(f"{cls.name}.{name}")
        if factory is None or not {"::classmethod", "::staticmethod"} & set(factory.decorators):
            continue
        for item in factory.items:
            if item.kind != "eval" or not item.receiver or "." in item.receiver:
                continue
            # then returns what it builds (`cls(model, ...)`, `predictor_class(model, ...)`)
            if any(later.kind == "return" and (later.line, later.col) > (item.line, item.col) and (later.origin or "").startswith("call:") for later in factory.items):
                return "train", (
                    f"{cls.name}.{name}() puts the model in eval mode before building a {cls.name} "
                    f"({short_path(factory.path)}:{item.line}), but {cls.name}() built directly keeps the mode of its caller's model "
                    f"(a new or trained model is in training mode) and never calls {receiver}.eval()"
                )
    return None, ""


def _sibling_evidence(project, module, fs, receiver):
    """A wrapper that runs the model its caller hands in (`self.model = model`) and never calls
    eval(), where another subclass of the same project base puts its own `self.model` in eval
    mode itself: the project's wrappers own the mode, this one forgot (and no construction in the
    project hands it a model in eval mode)."""
    found = _passed_model(project, module, fs, receiver)
    if found is None:
        return None, ""
    cls, init, param = found
    for caller, call in project.class_constructions(cls):
        argument = _argument_for(init, call, param)
        if argument is None or project.mode_at(caller, argument, call.line, call.col, call.conds)[0] != "train":
            return None, ""  # built in the project with a model not shown to be training
    for other in _relatives(project, cls):
        where = _evaluates_own(project, other, receiver)
        if where:
            return "train", (
                f"{cls.name} keeps the mode of the model its caller passes in (a new or trained model is in training mode) "
                f"and never calls {receiver}.eval(), while "
                f"{other.name}, another subclass of the same base, puts its {receiver} in eval mode at {where}"
            )
    return None, ""


def _relatives(project, cls):
    """Project classes that share a project base with `cls` and do not derive from it."""
    for ref in cls.bases:
        base = project.resolve(cls.path, ref)
        if base and base[0] == "class":
            for other in project.subclasses(base[1]):
                if not any(c is cls for c in project.lineage(other)):
                    yield other


def _evaluates_own(project, cls, receiver) -> str | None:
    """Where a method of `cls` puts its own `receiver` in eval mode (`self.model = X.eval()`)."""
    module = project.modules[cls.path]
    for name in cls.methods:
        method = module.functions.get(f"{cls.name}.{name}")
        for item in method.items if method is not None else ():
            if (item.kind == "eval" and item.receiver == receiver) or (item.kind == "assign" and item.receiver == receiver and item.origin == "eval"):
                return f"{short_path(cls.path)}:{item.line}"
    return None


def _switched_after(project, caller, argument, construction) -> bool:
    """After the holder is built with the model, the building function switches the model's
    mode or hands it to a call that may (`p = Predictor(model); model.eval()`)."""
    return any(
        (e.line, e.col) > (construction.line, construction.col)
        and ((e.kind in ("eval", "train") and related(e.receiver, argument)) or (e.kind == "call" and not _neutral(e.receiver) and any(related(a, argument) for a in e.args)))
        for e in project.events(caller)
    )


def _recalibration(ctx, fs, events, site, receiver, loops, call: ast.Call) -> bool:
    """`model.train()` then forwards under no_grad, no backward, no eval() or checkpoint before
    the train(): BatchNorm recalibration or Monte-Carlo dropout, on purpose; also after an eval()
    when the forward repeats on one input (Monte-Carlo sampling)."""
    before = [e for e in events if (e.line, e.col) < (site.line, site.col)]
    if _says_calibration(ctx, fs, site) and not any(e.kind in ("backward", "eval", "load") for e in before):
        return True
    for event in reversed(before):
        if event.kind == "backward":
            return False
        if event.kind == "train" and related(event.receiver, receiver) and event.via is None:
            line = ctx.lines[event.line - 1] if 0 < event.line <= len(ctx.lines) else ""
            if RECALIBRATION_RE.search(line) or RECALIBRATION_RE.search(fs.name) or _repeated_sampling(loops, call):
                return True
            if INFERENCE_FUNC_RE.match(fs.name):
                return False  # an evaluation function that puts the model in training mode
            earlier = [e for e in before if (e.line, e.col) < (event.line, event.col)]
            return not any(e.kind in ("eval", "load") and related(e.receiver, receiver) for e in earlier)
    return False


def _repeated_sampling(loops, call: ast.Call) -> bool:
    """The forward repeats on the same input in a `for _ in range(n)` loop (Monte-Carlo dropout:
    `net.train()`, then `for t in range(100): y_hat.append(net(x))`), which only makes sense if the
    model is random. An input that the loop changes (generation, batches) is not this. Asked only
    after the function's own train(): a model the training loop left in training mode may sample
    noise of its own, with dropout on by accident."""
    inputs = {n.id for arg in (*call.args, *(k.value for k in call.keywords)) for n in ast.walk(arg) if isinstance(n, ast.Name)}
    if not inputs:
        return False
    for loop in loops:
        if not isinstance(loop, ast.For) or not _contains(loop, call):
            continue
        iterated = loop.iter.func if isinstance(loop.iter, ast.Call) else None
        if dotted_name(iterated) not in ("range", "trange", "tqdm.trange"):
            continue
        changed = {n.id for n in ast.walk(loop.target) if isinstance(n, ast.Name)}
        changed |= {
            n.id
            for statement in loop.body
            for node in ast.walk(statement)
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.For, ast.NamedExpr, ast.With))
            for target in _targets(node)
            for n in ast.walk(target)
            if isinstance(n, ast.Name)
        }
        if not inputs & changed:
            return True
    return False


def _targets(node) -> list[ast.AST]:
    if isinstance(node, ast.Assign):
        return node.targets
    if isinstance(node, ast.With):
        return [item.optional_vars for item in node.items if item.optional_vars is not None]
    return [node.target]


def _says_calibration(ctx, fs, site) -> bool:
    """The function's name, or a comment between its start and the forward, says the forwards
    calibrate BatchNorm statistics (a fresh model run under no_grad to fill running stats)."""
    if CALIBRATION_RE.search(fs.name):
        return True
    first = max(site.line - 40, 1)
    return any("#" in line and CALIBRATION_RE.search(line.split("#", 1)[1]) for line in ctx.lines[first - 1 : site.line])


_REASONS = {
    "after-training": "under no_grad after the training loop",
    "test-loop": "in a test loop after the training loop",
    "no-grad": "under no_grad/inference_mode",
    "function": "in an evaluation function",
    "restored": "with restored or pretrained weights",
    "after-fit": "in a method of a class that trains it elsewhere",
    "restored-global": "a module-level model with restored or pretrained weights",
}


# -- an nn.Module's own inference methods --------------------------------------------------
_OWN_INFERENCE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
NOT_INFERENCE_METHODS = frozenset(("forward", "__call__", "__init__", "train", "eval", "training_step", "fit"))


def _own_inference(project, path: str) -> dict:
    """Sites in `path` where an nn.Module's own inference method (`predict()`, a no_grad
    method) runs the module, through its own helpers, while an instance is in training mode by
    the class's own doing: it restores its weights in `__init__`, or its loader (a classmethod
    building `cls(...)` and loading a state dict) returns it, with no eval(); a loader returning
    a pickled module counts only where another module's method of the same name calls
    self.eval() itself (the project's convention). Only modules that hold, or are given,
    Dropout/BatchNorm; silent where a caller in the project evaluates what the class builds or
    loads. {(line, col): (receiver, entry, why)}."""
    per_project = _OWN_INFERENCE.setdefault(project, {})
    if path in per_project:
        return per_project[path]
    found: dict = {}
    reported: set[str] = set()
    module = project.modules.get(path)
    for cls in module.classes.values() if module is not None and not pytest_file(path) else ():
        if not project.is_module_class(cls):
            continue
        for instance in (cls, *project.subclasses(cls)):
            why, certain = _restored_in_training_mode(project, instance)
            if why is None or not (project.has_mode_layers(instance) or any(c.given_layers for c in project.lineage(instance))):
                continue
            for entry in _inference_entries(project, instance):
                peer = None if certain else _self_evaluating_methods(project).get(entry.name)
                if not certain and (peer is None or peer[0] in project.lineage(instance)):
                    continue
                reason = why if certain else f"{why}, while {peer[0].name}.{entry.name}() ({peer[1]}) calls self.eval() itself: callers rely on it"
                for fs, line, col, receiver, chain in _model_runs(project, instance, entry, (), set()):
                    if fs.path == path and fs.key not in reported:  # the first run of the module in each method
                        reported.add(fs.key)
                        via = f", through {'(), '.join(chain)}()" if chain else ""
                        found.setdefault((line, col), (receiver, f"{entry.name}(){via}", reason))
    per_project[path] = found
    return found


def _restored_in_training_mode(project, instance) -> tuple[str | None, bool]:
    """Why a trained instance of the class is in training mode by the class's own doing: its
    `__init__` restores its weights, or a loader of its lineage (classmethod/staticmethod) builds
    it and restores them, and neither calls eval() (certain); or the loader returns a pickled
    module (`torch.load`) in whatever mode it was saved in (not certain)."""
    init = project.method(instance, "__init__")
    load = next((i for i in init[1].items if i.kind == "load" and i.receiver == "self"), None) if init is not None else None
    if load is not None:
        built = project.class_constructions(instance)
        if not any(e.kind == "eval" and (e.receiver or "").split(".")[0] == "self" for e in project.events(init[1])) and not _evaluated_by_callers(project, built):
            return f"{instance.name}.__init__ restores its weights ({short_path(init[1].path)}:{load.line}) and never calls eval()", True
    for cls in project.lineage(instance):
        for name in cls.methods:
            fs = project.modules[cls.path].functions.get(f"{cls.name}.{name}")
            if fs is None or not any(d.endswith(("classmethod", "staticmethod")) for d in fs.decorators):
                continue
            if not any(i.kind == "return" for i in fs.items):
                continue
            why = _loader_in_training_mode(project, fs, cls, instance)
            if why is not None and not _evaluated_by_callers(project, project.callers(fs)):
                return why
    return None, False


def _evaluated_by_callers(project, calls) -> bool:
    """Some caller in the project puts what it builds or loads in eval mode: there the
    project's convention is that callers own the mode."""
    for caller, call in calls:
        target = next((i.receiver for i in caller.items if i.kind == "assign" and i.line == call.line and i.receiver), None)
        if target is not None and any(
            e.kind == "eval" and related(e.receiver, target) and (e.line, e.col) > (call.line, call.col) for e in project.events(caller)
        ):
            return True
    return False


def _loader_in_training_mode(project, fs, cls, instance) -> tuple[str, bool] | None:
    """`model = cls(...)`; `model.load_state_dict(...)`; `return model` (or `model =
    torch.load(...)`; `return model`), no eval() on `model`."""
    events = project.events(fs)
    constructors = tuple(f"call:{n}" for n in ("cls", cls.name, instance.name))
    built = {e.receiver: e for e in events if e.kind == "assign" and (e.origin in constructors or e.origin == "built:torch.load")}
    for name, assign in built.items():
        returned = any(r.kind == "return" and r.origin == f"alias:{name}" for r in events)
        switched = any(x.kind == "eval" and related(x.receiver, name) or x.kind == "assign" and x.receiver == name and x.origin == "eval" for x in events)
        if not returned or switched:
            continue
        where = f"{cls.name}.{fs.name}() ({short_path(fs.path)}:{assign.line})"
        if assign.origin == "built:torch.load":
            return f"{where} returns a pickled module, in whatever mode it was saved in, without eval()", False
        load = next((e for e in events if e.kind == "load" and e.receiver == name and (e.line, e.col) > (assign.line, assign.col)), None)
        if load is not None:
            return f"{where} builds it and restores its weights without eval(), so a loaded module is in training mode", True
    return None


def _self_evaluating_methods(project) -> dict:
    """Method names with which some nn.Module of the project puts itself in eval mode
    (`def predict(self, x): self.eval() ...`): {name: (class, "path:line")}."""
    per_project = _OWN_INFERENCE.setdefault(project, {})
    if "<self-eval>" not in per_project:
        found = {}
        for module in project.modules.values():
            for cls in module.classes.values():
                for name in cls.methods:
                    fs = module.functions.get(f"{cls.name}.{name}")
                    item = next((i for i in fs.items if i.kind == "eval" and i.receiver == "self" and not i.conds), None) if fs is not None else None
                    if item is not None and name not in found and project.is_module_class(cls):
                        found[name] = (cls, f"{short_path(fs.path)}:{item.line}")
        per_project["<self-eval>"] = found
    return per_project["<self-eval>"]


def _inference_entries(project, instance) -> list:
    """The instance's methods that run inference: named so (`predict*`, `evaluate`...) or with
    autograd off for the whole method, and no backward() in them."""
    entries, seen = [], set()
    for cls in project.lineage(instance):
        for name in cls.methods:
            if name in seen or name in NOT_INFERENCE_METHODS or name.startswith("test_") or FRAMEWORK_HOOK_RE.search(name):
                continue
            seen.add(name)
            found = project.method(instance, name)
            fs = found[1] if found else None
            if fs is None or not (INFERENCE_FUNC_RE.match(name) or fs.grad_off or (fs.decorators and project.is_grad_off_decorator(fs))):
                continue
            if name not in _trained_methods(project) and not any(e.kind == "backward" for e in project.events(fs)):
                entries.append(fs)
    return entries


def _trained_methods(project) -> frozenset[str]:
    """Names of methods called with autograd on before a backward() in the same function
    (`values = policy.evaluate_actions(obs)`... `loss.backward()`): part of training, not inference."""
    per_project = _OWN_INFERENCE.setdefault(project, {})
    if "<trained>" not in per_project:
        names = set()
        for caller in (fs for module in project.modules.values() for fs in (*module.functions.values(), module.module_level) if fs is not None):
            last = max(((i.line, i.col) for i in caller.items if i.kind == "backward" and not i.grad_off), default=None)
            for item in caller.items if last is not None else ():
                ref = item.receiver or ""
                if item.kind == "call" and ref.startswith(("obj:", "self:")) and not item.grad_off and (item.line, item.col) <= last:
                    names.add(ref.rsplit(".", 1)[-1].removeprefix("self:"))
        per_project["<trained>"] = frozenset(names)
    return per_project["<trained>"]


def _model_runs(project, instance, fs, chain, seen, depth=0):
    """Where `fs` (a method as `instance` sees it) runs the module: `self(...)`, a submodule of
    `self`, or a call dispatched to the instance's own override that does; helpers of the
    class followed; a path that switches the mode first (eval(), or train() for MC dropout)
    stops there."""
    if fs.key in seen or depth > 6:
        return
    seen.add(fs.key)
    switches = [(e.line, e.col) for e in project.events(fs) if e.kind in ("eval", "train") and (e.receiver or "").split(".")[0] == "self"]
    defining = project.modules[fs.path].classes.get(fs.cls) if fs.cls else None
    for name, line, col in fs.self_calls:
        if any(position < (line, col) for position in switches):
            return
        if name == "forward":
            yield fs, line, col, "self", chain
            continue
        found = project.method(instance, name)
        if found is None or found[0] != "function":
            if _submodule(project, instance, name):
                yield fs, line, col, f"self.{name}", chain
            continue
        target = found[1]
        here = project.method(defining, name) if defining is not None else None
        if here is None or here[1] is not target:  # dispatched to the instance's override
            if next(_model_runs(project, instance, target, chain, set(seen), depth + 1), None) is not None:
                yield fs, line, col, "self", (*chain, f"{instance.name}.{name}")
            continue
        yield from _model_runs(project, instance, target, (*chain, name), seen, depth + 1)


def _submodule(project, instance, name) -> bool:
    """`self.<name>` is a model the class builds or is given, not a frozen/target copy."""
    if NOT_TRAINED_RE.search(name) or name in project.frozen:
        return False
    return any(f"self.{name}" in cls.model_attrs for cls in project.lineage(instance))
