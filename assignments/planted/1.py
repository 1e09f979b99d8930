# Planted wrong solution for assignment 1: the link forgets its residual path (x, or W3 x for an outer link).
# loses: the five variants' equations | an untrained link is identity times its scale
# replaces: links.RecursiveLink.forward
def forward(self, x):
    dtype = x.dtype
    x = x.to(self.W1.weight.dtype)
    h = self.ln_in(x) if self.ln else x
    branch = self.W1(h) if self.W2 is None else self.W2(F.gelu(self.W1(h)))
    y = self.ln_out(branch) if self.ln else branch
    return (self.scale * y).to(dtype)
