"""The Dassl edge: the base trainer (base.py), one trainer per method and the dataset classes. Needs Dassl;
everything under clip_adapt/ outside this folder is framework-free."""
