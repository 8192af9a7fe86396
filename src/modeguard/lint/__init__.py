"""Static analysis of Python source for train/eval-mode bugs (rule codes MG1xx). Never imports torch."""
