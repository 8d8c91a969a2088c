# A página de pagamento, em português. Cada mensagem existe em todas as
# línguas (um teste verifica-o); `{ $x }` é preenchido pela página.

money = { $amount } { $currency }
brand-card = Cartão

## As páginas e os seus estados
title-checkout = Pagamento
title-processing = Pagamento em curso
heading-processing = A processar o seu pagamento…
lead-processing = Esta página atualiza-se sozinha. Não pague de novo.
lead-bank-answer = A resposta do seu banco está a caminho. Esta página atualiza-se sozinha.
title-cancelling = Cancelamento do pagamento
heading-cancelling = A cancelar o seu pagamento…
lead-cancelling = Não será cobrado nenhum pagamento. Esta página atualiza-se sozinha.
outcome-paid = Pagamento efetuado
outcome-authorised = Pagamento autorizado
outcome-verified = Cartão verificado
outcome-not-taken = Pagamento não efetuado
title-expired = Ligação expirada
heading-expired = Esta ligação de pagamento expirou
lead-expired = Não foi cobrado nenhum pagamento. Peça uma nova ligação ao comerciante.
title-cancelled = Pagamento cancelado
heading-cancelled = Este pagamento foi cancelado
lead-cancelled = Não foi cobrado nenhum pagamento.
return-to-merchant = Voltar ao comerciante
back-to-merchant = Regressar ao comerciante
charged = Cobrado: { $amount }
refunded = Reembolsado: { $amount }
refunded-in-full = Reembolsado: { $amount } (na totalidade)
mandate-in-place = A sua autorização para pagamentos futuros está em vigor.

## O formulário do cartão
terms-heading = Autorização para pagamentos futuros
saved-heading = Os seus cartões guardados
saved-pay = { $action } com { $card }
saved-card = { $brand } •••• { $last4 } (válido até { $expiry })
other-card-heading = Ou pague com outro cartão
card-number = Número do cartão
expiry-label = Validade (MM/AA)
expiry-placeholder = MM/AA
security-code = Código de segurança
save-card = Guardar este cartão para compras futuras
button-verify-authorise = Verificar o cartão e autorizar
button-pay-authorise = Pagar { $amount } e autorizar
button-verify = Verificar o cartão
button-pay = Pagar { $amount }
cancel-and-return = Cancelar e voltar a { $merchant }
cancel-payment = Cancelar o pagamento
use-another-card = Usar outro cartão

## O que o cliente sabe de uma recusa (só aquilo em que pode agir)
decline-insufficient-funds = O seu cartão não tem saldo suficiente.
decline-expired = O seu cartão expirou.
decline-other = O seu cartão foi recusado.
decline-retry = { $reason } Tente de novo ou use outro cartão.

## As verificações da página, antes de o cartão ser enviado
check-number = Verifique o número do cartão: não é um número de cartão válido.
check-expiry-format = Indique a validade no formato MM/AA.
check-expired = Este cartão expirou.

## As respostas do cofre, pelo seu código
card-incorrect-number = O número do cartão não é um número válido.
card-invalid-expiry = A data de validade não é válida.
card-expired = O cartão expirou.
card-invalid-cvc = O código de segurança tem de ter 3 ou 4 algarismos.
card-refused = O cartão não foi aceite. Verifique o número, a validade e o código de segurança.
expiry-must-look = A validade tem de estar no formato MM/AA.
saved-card-refused = Esse cartão guardado não pode ser usado aqui. Indique outro cartão.

## 3-D Secure
title-challenge = Confirme com o seu banco
heading-challenge = Confirme este pagamento com o seu banco
sandbox-challenge = Modo de teste: esta é a página 3-D Secure do ambiente de testes, no lugar da do seu banco.
authenticate = Autenticar
fail-authentication = Falhar a autenticação
bank-check-opens = A verificação do seu banco abre aqui. Mantenha esta página aberta.
bank-check-needs-script = A verificação do seu banco precisa de JavaScript. Ative-o e recarregue esta página, ou use outro cartão.
bank-check-unavailable = Não é possível mostrar a verificação do seu banco neste momento.

## Quando algo corre mal
title-not-found = Página não encontrada
title-try-again = Tente de novo
title-please-try-again = Por favor, tente de novo
title-too-many-attempts = Demasiadas tentativas
title-too-many-requests = Demasiados pedidos
too-many-attempts = Aguarde um minuto antes de tentar de novo. Não foi cobrado nenhum pagamento.
too-many-requests = Aguarde um minuto e recarregue esta página.
cannot-load = Não é possível carregar esta página neste momento.
form-expired = Este formulário expirou. Recarregue a página.
form-expired-card = Este formulário expirou. Recarregue a página e indique de novo o seu cartão.
form-not-ours = Este formulário não é nosso.
cannot-pass-answer = Não foi possível transmitir a resposta do seu banco. Recarregue a página.
cannot-cancel = Não foi possível cancelar neste momento. Recarregue a página.
cannot-start = Não foi possível iniciar o seu pagamento. Não foi cobrado nenhum pagamento.
cannot-process-card = Não foi possível processar o seu cartão neste momento. Não foi cobrado nenhum pagamento.

## Os termos do mandato, em frases
terms-charge = Autoriza { $merchant } a cobrar neste cartão { $amount }, { $when }.
terms-amount-exact = { $amount }
terms-amount-range = entre { $min } e { $max }
terms-amount-up-to = até { $max }
terms-amount-at-least = pelo menos { $min }
terms-amount-any = montantes em { $currency } que acordar com o comerciante
terms-when-due = sempre que um pagamento for devido, sem que esteja presente
terms-every = { $unit ->
        [day] { $n ->
            [1] uma vez por dia
           *[other] uma vez a cada { $n } dias
        }
        [week] { $n ->
            [1] uma vez por semana
           *[other] uma vez a cada { $n } semanas
        }
        [month] { $n ->
            [1] uma vez por mês
           *[other] uma vez a cada { $n } meses
        }
       *[year] { $n ->
            [1] uma vez por ano
           *[other] uma vez a cada { $n } anos
        }
    }
terms-on-weekday = { $day ->
        [1] à segunda-feira
        [2] à terça-feira
        [3] à quarta-feira
        [4] à quinta-feira
        [5] à sexta-feira
        [6] ao sábado
       *[7] ao domingo
    }
terms-on-month-day = no dia { $day } do mês
terms-on-year-day = no dia { $day } do ano
terms-weekend-adjusted = no dia útil mais próximo, se calhar a um fim de semana
terms-from-until = As cobranças podem ser feitas de { $start } a { $end }.
terms-from = As cobranças podem ser feitas a partir de { $start }.
terms-until = As cobranças podem ser feitas até { $end }.
terms-max-count-total = { $n ->
        [1] Uma única cobrança
       *[other] No máximo { $n } cobranças
    }, e não mais de { $total } no total.
terms-max-count = { $n ->
        [1] Uma única cobrança.
       *[other] No máximo { $n } cobranças.
    }
terms-max-total = Não mais de { $total } no total.
terms-cancel = Pode cancelar esta autorização a qualquer momento, contactando { $merchant }.
