# La page de paiement, en français. Chaque message existe dans chaque langue
# (un test le vérifie) ; `{ $x }` est rempli par la page.

money = { $amount } { $currency }
brand-card = Carte

## Les pages et leurs états
title-checkout = Paiement
title-processing = Paiement en cours
heading-processing = Traitement de votre paiement…
lead-processing = Cette page se met à jour d'elle-même. Merci de ne pas payer une seconde fois.
lead-bank-answer = La réponse de votre banque est en route. Cette page se met à jour d'elle-même.
title-cancelling = Annulation du paiement
heading-cancelling = Annulation de votre paiement…
lead-cancelling = Aucun paiement ne sera prélevé. Cette page se met à jour d'elle-même.
outcome-paid = Paiement réussi
outcome-authorised = Paiement autorisé
outcome-verified = Carte vérifiée
outcome-not-taken = Paiement non effectué
title-expired = Lien expiré
heading-expired = Ce lien de paiement a expiré
lead-expired = Aucun paiement n'a été prélevé. Demandez un nouveau lien au marchand.
title-cancelled = Paiement annulé
heading-cancelled = Ce paiement a été annulé
lead-cancelled = Aucun paiement n'a été prélevé.
return-to-merchant = Retourner chez le marchand
back-to-merchant = Retour chez le marchand
charged = Montant débité : { $amount }
refunded = Montant remboursé : { $amount }
refunded-in-full = Montant remboursé : { $amount } (intégralement)
mandate-in-place = Votre autorisation de paiements futurs est en place.

## Le formulaire de carte
terms-heading = Autorisation de paiements futurs
saved-heading = Vos cartes enregistrées
saved-pay = { $action } avec { $card }
saved-card = { $brand } •••• { $last4 } (expire fin { $expiry })
other-card-heading = Ou payez avec une autre carte
card-number = Numéro de carte
expiry-label = Date d'expiration (MM/AA)
expiry-placeholder = MM/AA
security-code = Code de sécurité
save-card = Enregistrer cette carte pour mes prochains achats
button-verify-authorise = Vérifier la carte et autoriser
button-pay-authorise = Payer { $amount } et autoriser
button-verify = Vérifier la carte
button-pay = Payer { $amount }
cancel-and-return = Annuler et retourner chez { $merchant }
cancel-payment = Annuler le paiement
use-another-card = Utiliser une autre carte

## Ce que le client apprend d'un refus (seulement ce sur quoi il peut agir)
decline-insufficient-funds = Le solde de votre carte est insuffisant.
decline-expired = Votre carte a expiré.
decline-other = Votre carte a été refusée.
decline-retry = { $reason } Veuillez réessayer ou utiliser une autre carte.

## Les vérifications de la page, avant l'envoi de la carte
check-number = Vérifiez le numéro de carte : ce n'est pas un numéro de carte valide.
check-expiry-format = Saisissez la date d'expiration au format MM/AA.
check-expired = Cette carte a expiré.

## Les réponses du coffre-fort, selon leur code
card-incorrect-number = Le numéro de carte n'est pas un numéro valide.
card-invalid-expiry = La date d'expiration n'est pas valide.
card-expired = La carte a expiré.
card-invalid-cvc = Le code de sécurité doit comporter 3 ou 4 chiffres.
card-refused = La carte n'a pas été acceptée. Vérifiez son numéro, sa date d'expiration et son code de sécurité.
expiry-must-look = La date d'expiration doit être au format MM/AA.
saved-card-refused = Cette carte enregistrée ne peut pas être utilisée ici. Saisissez plutôt une carte.

## 3-D Secure
title-challenge = Confirmez auprès de votre banque
heading-challenge = Confirmez ce paiement auprès de votre banque
sandbox-challenge = Mode test : cette page 3-D Secure du bac à sable tient lieu de celle de votre banque.
authenticate = M'authentifier
fail-authentication = Faire échouer l'authentification
bank-check-opens = La vérification de votre banque s'ouvre ici. Gardez cette page ouverte.
bank-check-needs-script = La vérification de votre banque nécessite JavaScript. Activez-le et rechargez cette page, ou utilisez une autre carte.
bank-check-unavailable = La vérification de votre banque ne peut pas s'afficher pour le moment.

## Quand quelque chose ne va pas
title-not-found = Page introuvable
title-try-again = Réessayez
title-please-try-again = Veuillez réessayer
title-too-many-attempts = Trop de tentatives
title-too-many-requests = Trop de demandes
too-many-attempts = Patientez une minute avant de réessayer. Aucun paiement n'a été prélevé.
too-many-requests = Patientez une minute et rechargez cette page.
cannot-load = Nous ne pouvons pas afficher cette page pour le moment.
form-expired = Ce formulaire a expiré. Rechargez la page.
form-expired-card = Ce formulaire a expiré. Rechargez la page et saisissez de nouveau votre carte.
form-not-ours = Ce formulaire ne vient pas de nous.
cannot-pass-answer = Nous n'avons pas pu transmettre la réponse de votre banque. Rechargez la page.
cannot-cancel = Nous n'avons pas pu annuler pour le moment. Rechargez la page.
cannot-start = Nous n'avons pas pu lancer votre paiement. Aucun paiement n'a été prélevé.
cannot-process-card = Nous n'avons pas pu traiter votre carte pour le moment. Aucun paiement n'a été prélevé.

## Les conditions du mandat, en phrases
terms-charge = Vous autorisez { $merchant } à débiter cette carte { $amount }, { $when }.
terms-amount-exact = de { $amount }
terms-amount-range = d'un montant compris entre { $min } et { $max }
terms-amount-up-to = d'un montant maximal de { $max }
terms-amount-at-least = d'un montant minimal de { $min }
terms-amount-any = de montants en { $currency } convenus avec lui
terms-when-due = chaque fois qu'un paiement est dû, sans que vous soyez présent
terms-every = { $unit ->
        [day] { $n ->
            [1] une fois par jour
           *[other] une fois tous les { $n } jours
        }
        [week] { $n ->
            [1] une fois par semaine
           *[other] une fois toutes les { $n } semaines
        }
        [month] { $n ->
            [1] une fois par mois
           *[other] une fois tous les { $n } mois
        }
       *[year] { $n ->
            [1] une fois par an
           *[other] une fois tous les { $n } ans
        }
    }
terms-on-weekday = le { $day ->
        [1] lundi
        [2] mardi
        [3] mercredi
        [4] jeudi
        [5] vendredi
        [6] samedi
       *[7] dimanche
    }
terms-on-month-day = { $day ->
        [1] le 1er du mois
       *[other] le { $day } du mois
    }
terms-on-year-day = { $day ->
        [1] le 1er jour de l'année
       *[other] le { $day }e jour de l'année
    }
terms-weekend-adjusted = le jour ouvré le plus proche quand il tombe un week-end
terms-from-until = Les prélèvements peuvent avoir lieu du { $start } au { $end }.
terms-from = Les prélèvements peuvent avoir lieu à partir du { $start }.
terms-until = Les prélèvements peuvent avoir lieu jusqu'au { $end }.
terms-max-count-total = { $n ->
        [1] Un seul prélèvement
       *[other] Au plus { $n } prélèvements
    }, pour un total d'au plus { $total }.
terms-max-count = { $n ->
        [1] Un seul prélèvement.
       *[other] Au plus { $n } prélèvements.
    }
terms-max-total = Pas plus de { $total } au total.
terms-cancel = Vous pouvez annuler cette autorisation à tout moment en contactant { $merchant }.
