"""Fine-tune a small BERT (random weights from a config) with the Hugging Face Trainer, save it,
reload it with from_pretrained (which returns the model in eval mode) and fine-tune further with
a hand-written loop. Bug: the hand-written loop never calls model.train() (dropout stays off)."""

import sys
import tempfile

import torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments

BUG = "--bug" in sys.argv
torch.manual_seed(0)
config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, max_position_embeddings=32, num_labels=2)
model = BertForSequenceClassification(config)


class Texts(torch.utils.data.Dataset):
    def __init__(self, n):
        self.ids = torch.randint(1, 64, (n, 12))
        self.labels = (self.ids[:, 0] > 32).long()

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "attention_mask": torch.ones(12, dtype=torch.long), "labels": self.labels[i]}


with tempfile.TemporaryDirectory() as out:
    args = TrainingArguments(out, num_train_epochs=1, per_device_train_batch_size=8, per_device_eval_batch_size=8,
                             learning_rate=1e-3, eval_strategy="epoch", save_strategy="no", report_to=[],
                             logging_strategy="no", use_cpu=True, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=Texts(32), eval_dataset=Texts(16))
    trainer.train()
    print(trainer.evaluate())

    model.save_pretrained(out)
    model = BertForSequenceClassification.from_pretrained(out)

optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
if not BUG:
    model.train()
data = Texts(16)
for start in range(0, 16, 4):
    outputs = model(**data[start:start + 4])  # BUG: MG302
    optimizer.zero_grad()
    outputs.loss.backward()
    optimizer.step()
model.eval()
with torch.no_grad():
    print(model(input_ids=data.ids[:4]).logits.argmax(-1).tolist())
