"""FinReason configuration: flat constants, one line of why each.

Every constant can be overridden for one run with ``--KEY=value`` (type-checked against the
default here, range-checked against the allowed values each comment starts with; an unknown key
is an error) and a whole hardware profile chosen with ``--PROFILE=name``. Overrides are applied
inside each script's ``main()`` by ``finreason.configuration.parse_args``; importing this module
never changes anything.

Out of memory? ``python 00_check_env.py --probe`` measures a few real steps and names the first
constant to lower. The order (README, "Out of memory"): NUM_GENERATIONS, GRPO_MAX_NEW_TOKENS,
MAX_SEQ_LEN, SFT_BATCH_SIZE (raise SFT_GRAD_ACCUM to keep the effective batch), EVAL_BATCH_SIZE,
PROMPT_TOKEN_BUDGET.
"""

# --- run ---------------------------------------------------------------------------------
PROFILE = "auto"  # auto | rtx4060 | t4 | a100 | cpu; auto = rtx4060 with CUDA, else cpu
SEED = 42  # >= 0; one seed for python, numpy, torch and sampling; recorded in every results file
OUTPUT_DIR = "outputs"  # non-empty; every artifact goes below here (git-ignored)

# --- data --------------------------------------------------------------------------------
DATA_DIR = ""  # any folder with train.json/dev.json/test.json in FinQA's format; "" = auto
FINQA_CACHE_DIR = "~/.cache/finreason/finqa"  # non-empty; full official files, verified by git blob SHA-1
DOWNLOAD_DATA = True  # true | false; try the official download (verified) when no cache; offline falls through
DOWNLOAD_TIMEOUT_S = 20.0  # > 0; seconds per file before giving up on the network

# --- model -------------------------------------------------------------------------------
MODEL_NAME = "Qwen/Qwen2.5-1.5B-Instruct"  # non-empty; hub id, local dir or .gguf; 1.5B fits 8 GB in 4-bit
LOAD_IN_4BIT = True  # true | false; QLoRA base: NF4 + double quantisation via bitsandbytes
COMPUTE_DTYPE = "bfloat16"  # bfloat16 | float16 | float32; float16 on cards without bf16 (T4)
USE_UNSLOTH = True  # true | false; Unsloth's fast path when it imports (CUDA only); PEFT otherwise
USE_VLLM = False  # true | false; generate with vLLM when installed and a GPU is present (eval and GRPO)
FINETUNE = "lora"  # lora | full; full trains every weight (small models on CPU; needs LOAD_IN_4BIT=false)
CPU_PRECISION = "float32"  # auto | float32 | bfloat16; training without CUDA: bf16 autocast over fp32 weights; auto = what 00_check_env.py --probe measured to be faster and to fit CPU_MEMORY_BUDGET_GB
CPU_MEMORY_BUDGET_GB = 4.0  # > 0; GiB training without CUDA may take: CPU_PRECISION=auto keeps bf16 only where the probe's projected SFT peak fits (4: make demo on an 8 GB laptop)

# --- prompt ------------------------------------------------------------------------------
EVIDENCE_MODE = "retrieved"  # retrieved | gold; gold = FinQA's gold facts only (an easier, labelled setting)
RETRIEVER = "learned"  # learned | bm25 | budget_fill; how retrieved evidence is chosen (finreason.retrieval)
RETRIEVER_TOP_K = 5  # >= 1; facts (rows, sentences) a ranker keeps, header added; 5: 85% keep all gold, ~220 Qwen tokens
PROMPT_TOKEN_BUDGET = 1024  # >= 1; cap on evidence tokens (model's tokenizer); budget_fill fills it, rankers stop below
MAX_SEQ_LEN = 1536  # >= 1; prompt + answer tokens in training; lower first if SFT runs out of memory
PROMPT_INSTRUCTIONS = "full"  # full | brief; full explains the program language (zero-shot needs it), brief only names it
FEW_SHOT_EXAMPLE = True  # true | false; one short worked example in the system prompt so format is never the failure

# --- evaluation --------------------------------------------------------------------------
EVAL_SPLIT = "test"  # dev | test
EVAL_LIMIT = 0  # >= 0; the first N examples of EVAL_SPLIT; 0 = the whole split
EVAL_BATCH_SIZE = 8  # >= 1; prompts per generate() call; halve on OOM
MAX_NEW_TOKENS = 256  # >= 1; answer tokens at evaluation; reasoning + Program + Answer fit in ~150
LENIENT_REL_TOL = 0.01  # >= 0; lenient metric: relative tolerance (1%) after percent/fraction rescaling
BOOTSTRAP_SAMPLES = 1000  # >= 0; resamples for 95% confidence intervals (0 = none)

# --- LoRA (FINETUNE=lora) ----------------------------------------------------------------
LORA_R = 16  # >= 1; adapter rank; 8 halves adapter memory, 32 rarely helps at 1.5B
LORA_ALPHA = 32  # >= 1; scale = alpha / r; keep at 2r
LORA_DROPOUT = 0.05  # 0 <= x < 1; regularisation on a few thousand examples
LORA_TARGET_MODULES = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"  # non-empty; comma-separated

# --- SFT ---------------------------------------------------------------------------------
SFT_TARGET = "reasoning"  # reasoning | program; reasoning = a sentence citing the facts, then Program and Answer
SFT_TRAIN_LIMIT = 0  # >= 0; the first N training examples; 0 = all of train
SFT_EVIDENCE_VIEWS = "one"  # one | both; both (EVIDENCE_MODE=retrieved only) = every training example twice, with its retrieved evidence and with its gold facts: two views of few examples
SFT_PROGRAM_VIEWS = "one"  # one | commuted; commuted = also every training example whose program adds or multiplies two different arguments, its target written with them swapped (an equal program)
SFT_DISTRACTOR_VIEWS = 0  # >= 0; N (EVIDENCE_MODE=retrieved, a ranker) = also every training example N more times, with the gold facts its retrieved evidence holds beside other near-miss facts of the ranker: more distractors to tell the gold rows from
SFT_BATCH_SIZE = 2  # >= 1; sequences per device step; lower first on OOM
SFT_GRAD_ACCUM = 8  # >= 1; effective batch = SFT_BATCH_SIZE * SFT_GRAD_ACCUM * GPUs
SFT_LEARNING_RATE = 2e-4  # > 0; LoRA learning rate; 1e-4 if loss spikes; ~1e-4 for FINETUNE=full
SFT_EPOCHS = 3.0  # > 0; passes over train (the most, with SFT_HOLDOUT > 0); ignored when SFT_MAX_STEPS > 0
SFT_HOLDOUT = 0  # >= 0; training rows held out (a seeded draw, never dev or test) and answered greedily after every epoch: the best epoch's weights are kept; 0 = train on every row, keep the last epoch
SFT_PATIENCE = 1  # >= 1; epochs without a better held-out score before SFT stops early (with SFT_HOLDOUT > 0)
SFT_MAX_STEPS = -1  # -1 or >= 1; optimizer steps; -1 = use SFT_EPOCHS
SAVE_STEPS = 50  # >= 1; checkpoint every N optimizer steps, so a killed run resumes
GRADIENT_CHECKPOINTING = True  # true | false; recompute activations in backward: slower, far less memory
SFT_PAD_TO_MULTIPLE = 1  # >= 1; pad each SFT batch to a multiple of this many tokens (1 = to its longest row only); on a CPU every new length costs heap and oneDNN cache for good, so few recurring lengths keep memory flat
SFT_TRL_ARGS = ""  # "" or name=value[,name=value]; any other field of TRL's SFTConfig, e.g. max_grad_norm=0.5,weight_decay=0.01

# --- GRPO --------------------------------------------------------------------------------
GRPO_TRAIN_LIMIT = 0  # >= 0; the first N training questions are candidates; 0 = all of train
NUM_GENERATIONS = 4  # >= 2; completions per question; lower first on OOM, but 2 gives weak signal
GRPO_MAX_NEW_TOKENS = 256  # >= 1; completion tokens while sampling; second knob on OOM
GRPO_TEMPERATURE = 0.9  # > 0; sampling temperature; lower = fewer mixed groups
GRPO_LEARNING_RATE = 5e-6  # > 0; RL learning rate on the trained weights
GRPO_BETA = 0.0  # >= 0; KL weight; 0 = no reference model, which is what fits 8 GB
GRPO_LOSS_TYPE = "dr_grpo"  # dr_grpo | dapo | grpo | bnpo (TRL loss_type)
GRPO_BATCH_SIZE = 4  # >= 1; completions per device step; BATCH * GRAD_ACCUM a multiple of NUM_GENERATIONS
GRPO_GRAD_ACCUM = 4  # >= 1; steps accumulated per optimizer update
GRPO_MAX_STEPS = 300  # >= 1; optimizer steps
GRPO_PAD_TO_MULTIPLE = 1  # >= 1; pad each GRPO batch to a multiple of this many tokens (1 = to its longest sequence only); on a CPU, 32 keeps a long run's memory flat (README: GRPO memory grows the same way)
REWARD_CORRECT_WEIGHT = 1.0  # >= 0; weight of the strict-correctness reward (the main signal)
REWARD_FORMAT_WEIGHT = 0.1  # >= 0; weight of the parseable Program/Answer reward
REWARD_MAX_ERROR_SHARE = 0.05  # 0 <= x <= 1; share of reward evaluations that may raise (a scorer bug) before the run stops; 1 = never
DIFFICULTY_FILTER = True  # true | false; keep questions the SFT model sometimes, not always, gets right
DIFFICULTY_MAX_CANDIDATES = 2000  # >= 0; questions sampled by the filter (0 = all); sampling is the slow part
GRPO_TRL_ARGS = ""  # "" or name=value[,name=value]; any other field of TRL's GRPOConfig, e.g. top_p=0.95,max_grad_norm=0.5

# --- app ---------------------------------------------------------------------------------
APP_HOST = "127.0.0.1"  # non-empty; `python app.py` binds Streamlit here; localhost keeps the demo private
APP_MAX_UPLOAD_KB = 512  # >= 1; larger uploaded tables are refused with a message

# Hardware profiles: each overrides the constants it names; --KEY=value still wins.
PROFILES = {
    "rtx4060": {},  # 8 GB: the defaults above are written for this card
    "t4": {  # 16 GB, no bf16
        "COMPUTE_DTYPE": "float16",
        "SFT_BATCH_SIZE": 4,
        "SFT_GRAD_ACCUM": 4,
        "NUM_GENERATIONS": 8,
        "GRPO_BATCH_SIZE": 8,
        "EVAL_BATCH_SIZE": 16,
    },
    "a100": {  # 40 GB: room for the 3B model and bigger groups
        "MODEL_NAME": "Qwen/Qwen2.5-3B-Instruct",
        "PROMPT_TOKEN_BUDGET": 1536,
        "MAX_SEQ_LEN": 2048,
        "SFT_BATCH_SIZE": 8,
        "SFT_GRAD_ACCUM": 2,
        "NUM_GENERATIONS": 8,
        "GRPO_BATCH_SIZE": 16,
        "EVAL_BATCH_SIZE": 32,
    },
    "cpu": {  # no CUDA: the embedded SmolLM2-135M, every weight trained, on gold facts (see README)
        "MODEL_NAME": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "LOAD_IN_4BIT": False,  # full fine-tuning trains real weights; NF4 on CPU also dequantises every matmul
        "COMPUTE_DTYPE": "float32",  # the weights the optimizer updates stay fp32; CPU_PRECISION decides bf16 autocast
        "CPU_PRECISION": "auto",  # bf16 autocast where the CPU has it: 1.2x faster SFT updates, same dev accuracy (README)
        "FINETUNE": "full",  # LoRA at 135M learned the format but no arithmetic in CPU-sized runs
        "EVIDENCE_MODE": "gold",  # FinQA's gold-retriever setting: learning shows in minutes; labelled everywhere
        "PROMPT_TOKEN_BUDGET": 384,  # used with --EVIDENCE_MODE=retrieved: CPU time grows with every token
        "RETRIEVER_TOP_K": 3,  # FinQANet's 3: at 135M every extra fact is a distractor (README, retrieved results)
        "PROMPT_INSTRUCTIONS": "brief",  # every prompt token is paid in every training step: ~150 fewer of them
        "FEW_SHOT_EXAMPLE": False,  # likewise; the fine-tuned model learns the format from its targets
        "MAX_SEQ_LEN": 1024,  # prompt + SFT target without truncation
        "SFT_TARGET": "program",
        "EVAL_LIMIT": 50,
        "EVAL_SPLIT": "dev",
        "EVAL_BATCH_SIZE": 8,
        "MAX_NEW_TOKENS": 64,  # Program + Answer targets are ~30 tokens (max ~90)
        "SFT_TRAIN_LIMIT": 0,
        "SFT_BATCH_SIZE": 1,  # one sequence per step: no padding, and activations stay small
        "SFT_GRAD_ACCUM": 8,
        "SFT_LEARNING_RATE": 1e-4,
        "SFT_EPOCHS": 1.0,
        "SFT_MAX_STEPS": -1,
        "SAVE_STEPS": 10,
        "GRADIENT_CHECKPOINTING": False,  # batch 1 fits without it, and recomputation costs a third more time
        "SFT_PAD_TO_MULTIPLE": 32,  # 11 lengths instead of 160: SFT stays flat near 3 GiB instead of growing 0.2 GiB a step (README); 8% more tokens
        "GRPO_TRAIN_LIMIT": 32,
        "NUM_GENERATIONS": 4,
        "GRPO_MAX_NEW_TOKENS": 64,
        "GRPO_TEMPERATURE": 1.0,  # the SFT model solves 11% of its training questions per sample here: mixed groups
        "GRPO_LEARNING_RATE": 1e-5,  # every weight; 2e-6 moved nothing in 8 steps (measured)
        "GRPO_BATCH_SIZE": 1,  # one completion per forward: 3.1 GiB peak instead of 5.7 at 4
        "GRPO_GRAD_ACCUM": 4,  # one question (its 4 completions) per update: more updates per minute
        "GRPO_MAX_STEPS": 15,  # the demo's share of 20 minutes; benchmarks/cpu_learning.py runs 30
        "DIFFICULTY_MAX_CANDIDATES": 32,
        "BOOTSTRAP_SAMPLES": 1000,
    },
}
